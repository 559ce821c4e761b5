"""FFHQ's face crop: the geometry of Karras et al.'s data set, from 68 facial landmarks to a square.

The FFHQ faces were cut out of their photos by a rotated square derived from the iBUG 68-point
landmarks (NVlabs/ffhq-dataset, ``recreate_aligned_images``):

    eye_left, eye_right = mean of points 36-41, mean of points 42-47
    mouth_left, mouth_right = points 48, 54
    eye_avg = (eye_left + eye_right) / 2              eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) / 2        eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - rot90(eye_to_mouth), rot90(a, b) = (-b, a), scaled to the length
        max(2.0 |eye_to_eye|, 1.8 |eye_to_mouth|)
    y = rot90(x)       c = eye_avg + 0.1 eye_to_mouth
    quad = (c - x - y, c - x + y, c + x + y, c + x - y): top-left, bottom-left, bottom-right, top-right

The photo is then shrunk by an integer factor when the square is more than twice the output
size, cropped to the square plus a border, reflect-padded (blurred and faded to the median
colour) where the square leaves the photo, and warped to the output size. :func:`align_face`
does these steps; the only departures are that the warp goes to at most 4x the output size
and no further before the final antialiased resize (FFHQ always used 4096 px), and that the
saved transform uses one pixel convention throughout (see :class:`FaceTransform`).

Coordinates: landmarks and quads are in dlib's pixel coordinates (pixel (i, j) centred at
(i, j)); :class:`FaceTransform` works in continuous coordinates, where pixel (i, j) covers
[i, i+1) x [j, j+1), so a landmark p is the continuous point p + 0.5.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tlgan.errors import TlganError

TRANSFORM_FORMAT = "tlgan.align/1"
LANDMARK_MODEL_NOTE = (
    "dlib shape_predictor_68_face_landmarks, trained on iBUG 300-W, whose licence excludes commercial use"
)
MAX_SUPERSAMPLE = 4


def eyes_and_mouth(landmarks: np.ndarray) -> dict[str, np.ndarray]:
    """The four points FFHQ uses, each (2,) float64: ``eye_left``, ``eye_right``, ``mouth_left``, ``mouth_right``.

    ``landmarks`` (68, 2) in the iBUG 300-W order (x, y per point); TlganError for any other shape.
    "Left" is the image's left (the subject's right eye).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise TlganError(f"landmarks must be 68 finite (x, y) points, shape (68, 2); got {lm.shape}")
    return {
        "eye_left": lm[36:42].mean(0),
        "eye_right": lm[42:48].mean(0),
        "mouth_left": lm[48].copy(),
        "mouth_right": lm[54].copy(),
    }


def _rot90(v: np.ndarray) -> np.ndarray:
    """(a, b) -> (-b, a): FFHQ's ``np.flipud(v) * [-1, 1]``."""
    return np.array([-v[1], v[0]])


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """FFHQ's oriented square for one face: (4, 2) float64 corners top-left, bottom-left, bottom-right, top-right.

    ``landmarks`` (68, 2) dlib pixel coordinates. TlganError for degenerate landmarks (eyes and
    mouth on one point).
    """
    p = eyes_and_mouth(landmarks)
    eye_avg = (p["eye_left"] + p["eye_right"]) * 0.5
    eye_to_eye = p["eye_right"] - p["eye_left"]
    eye_to_mouth = (p["mouth_left"] + p["mouth_right"]) * 0.5 - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    length = math.hypot(*x)
    if length < 1e-6:
        raise TlganError("degenerate landmarks: the eyes and the mouth coincide; no face crop can be made")
    x = x / length * max(math.hypot(*eye_to_eye) * 2.0, math.hypot(*eye_to_mouth) * 1.8)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


@dataclass(frozen=True)
class FaceTransform:
    """Where an aligned face lies in its photo.

    ``matrix`` (3, 3) float64 maps continuous coordinates of the aligned image of ``size`` px
    (pixel (i, j) covers [i, i+1) x [j, j+1)) to continuous coordinates of the photo of
    ``photo_size`` (width, height): ``[X, Y, 1] = matrix @ [u, v, 1]``. For FFHQ's crop it is a
    similarity (rotation, uniform scale, shift). ``quad`` (4, 2) and ``landmarks`` (68, 2) are
    in the photo's dlib pixel coordinates; ``box`` (left, top, right, bottom) the detector's
    box; ``face`` the face's rank from the left (1-based) of ``faces_found``.
    """

    matrix: np.ndarray
    size: int
    photo_size: tuple[int, int]
    quad: np.ndarray
    landmarks: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    face: int = 1
    faces_found: int = 1
    source: str | None = None
    margins: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    @classmethod
    def from_quad(cls, quad: np.ndarray, size: int, photo_size: tuple[int, int], **kwargs) -> FaceTransform:
        """The transform that sends the aligned square of ``size`` px onto ``quad`` (photo pixel coordinates)."""
        q = np.asarray(quad, dtype=np.float64) + 0.5  # dlib pixel centres -> continuous coordinates
        matrix = np.array(
            [
                [(q[3, 0] - q[0, 0]) / size, (q[1, 0] - q[0, 0]) / size, q[0, 0]],
                [(q[3, 1] - q[0, 1]) / size, (q[1, 1] - q[0, 1]) / size, q[0, 1]],
                [0.0, 0.0, 1.0],
            ]
        )
        return cls(
            matrix, int(size), (int(photo_size[0]), int(photo_size[1])), np.asarray(quad, float), **kwargs
        )

    @property
    def inverse(self) -> np.ndarray:
        """(3, 3): photo continuous coordinates -> aligned continuous coordinates."""
        return np.linalg.inv(self.matrix)

    @property
    def scale(self) -> float:
        """Photo pixels per aligned pixel (the square's side in the photo over ``size``)."""
        return float(math.sqrt(abs(np.linalg.det(self.matrix[:2, :2]))))

    def resized(self, size: int) -> FaceTransform:
        """The same square for an aligned image of ``size`` px (e.g. a generator's resolution)."""
        factor = self.size / int(size)
        matrix = self.matrix @ np.diag([factor, factor, 1.0])
        return FaceTransform(
            matrix,
            int(size),
            self.photo_size,
            self.quad,
            self.landmarks,
            self.box,
            self.face,
            self.faces_found,
            self.source,
            self.margins,
        )

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) aligned dlib pixel coordinates -> (N, 2) photo dlib pixel coordinates."""
        return _apply(self.matrix, points)

    def to_aligned(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) photo dlib pixel coordinates -> (N, 2) aligned dlib pixel coordinates."""
        return _apply(self.inverse, points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TRANSFORM_FORMAT,
            "method": "ffhq",
            "size": self.size,
            "photo_size": list(self.photo_size),
            "aligned_to_photo": self.matrix.tolist(),
            "coordinates": "continuous: pixel (i, j) covers [i, i+1) x [j, j+1); [X, Y, 1] = M @ [u, v, 1]",
            "quad": self.quad.tolist(),
            "landmarks": None if self.landmarks is None else np.asarray(self.landmarks).tolist(),
            "box": None if self.box is None else [float(v) for v in self.box],
            "face": self.face,
            "faces_found": self.faces_found,
            "source": self.source,
            "margins": [float(v) for v in self.margins],
            "landmark_model": LANDMARK_MODEL_NOTE,
        }

    def save(self, path: str | Path) -> Path:
        from tlgan.io import write_json

        write_json(path, self.to_dict())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> FaceTransform:
        """Read a transform JSON written by :meth:`save`; TlganError naming the file if it is not one."""
        path = Path(path)
        if not path.is_file():
            raise TlganError(
                f"{path}: no alignment transform there; align the photo first (`tlgan align` or "
                f"`tlgan invert --align ffhq`)"
            )
        try:
            d = json.loads(path.read_text())
            if d.get("format") != TRANSFORM_FORMAT:
                raise KeyError("format")
            matrix = np.asarray(d["aligned_to_photo"], dtype=np.float64)
            if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
                raise ValueError("matrix")
            return cls(
                matrix,
                int(d["size"]),
                (int(d["photo_size"][0]), int(d["photo_size"][1])),
                np.asarray(d["quad"], dtype=np.float64),
                None if d.get("landmarks") is None else np.asarray(d["landmarks"], dtype=np.float64),
                None if d.get("box") is None else tuple(d["box"]),
                int(d.get("face", 1)),
                int(d.get("faces_found", 1)),
                d.get("source"),
                tuple(float(v) for v in d.get("margins", (0, 0, 0, 0))),
            )
        except (ValueError, KeyError, TypeError, AttributeError, IndexError):
            raise TlganError(
                f"{path}: not an alignment transform ({TRANSFORM_FORMAT}); it is written by `tlgan align`"
            ) from None


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) + 0.5
    out = pts @ matrix[:2, :2].T + matrix[:2, 2]
    return out - 0.5


def canonical_quad(size: int) -> np.ndarray:
    """The quad of a face that is already aligned at ``size`` px: the crop's own corners, (4, 2) dlib pixels."""
    s = float(size)
    return np.array([[0.0, 0.0], [0.0, s], [s, s], [s, 0.0]]) - 0.5


def _pad_reflect(img: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """FFHQ's padding: reflect ``pad`` (left, top, right, bottom) pixels, blur the new border and fade it
    toward the median colour, so that a face near the photo's edge keeps a plausible background."""
    from scipy.ndimage import gaussian_filter

    left, top, right, bottom = pad
    out = np.pad(img.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w, _ = out.shape
    yy, xx = np.ogrid[:h, :w]
    xx, yy = xx.astype(np.float32), yy.astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        fx = np.minimum(xx / max(left, 1e-9), (w - 1 - xx) / max(right, 1e-9))
        fy = np.minimum(yy / max(top, 1e-9), (h - 1 - yy) / max(bottom, 1e-9))
    mask = np.maximum(1.0 - fx, 1.0 - fy)[..., None].astype(np.float32)
    blur = qsize * 0.02
    out += (gaussian_filter(out, [blur, blur, 0]) - out) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    out += (np.median(out, axis=(0, 1)) - out) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def align_face(
    photo: np.ndarray,
    landmarks: np.ndarray,
    size: int = 1024,
    *,
    pad: bool = True,
    **meta,
) -> tuple[np.ndarray, FaceTransform]:
    """Cut FFHQ's square out of ``photo`` (H, W, 3) uint8 for one face; returns ((size, size, 3) uint8, transform).

    ``landmarks`` (68, 2) in the photo's dlib pixel coordinates. ``pad`` False fills where the
    square leaves the photo with black instead of FFHQ's reflected, blurred border. ``meta``
    (box, face, faces_found, source) is stored in the transform, and so are the ``margins``:
    how far (photo pixels) from each photo edge (left, top, right, bottom) FFHQ's padding blurred
    the photo's own pixels, which paste-back leaves alone.
    """
    size = int(size)
    if size < 8:
        raise TlganError(f"the aligned size must be at least 8 px, not {size}")
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise TlganError(f"photo must be (H, W, 3) uint8, not {photo.shape} {photo.dtype}")
    H, W = photo.shape[:2]
    quad = ffhq_quad(landmarks)
    transform = FaceTransform.from_quad(
        quad, size, (W, H), landmarks=np.asarray(landmarks, dtype=np.float64), **meta
    )
    img = Image.fromarray(photo)
    q = quad.copy()
    qsize = math.hypot(*(quad[3] - quad[0]))
    # `local` maps photo continuous coordinates to those of the (shrunk, cropped, padded) working image.
    local = np.eye(3)

    shrink = int(math.floor(qsize / size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(W / shrink)), int(np.rint(H / shrink)))
        img = img.resize(rsize, Image.LANCZOS, reducing_gap=3.0)
        sx, sy = img.size[0] / W, img.size[1] / H
        local = np.diag([sx, sy, 1.0]) @ local
        q, qsize = q / shrink, qsize / shrink

    border = max(int(np.rint(qsize * 0.1)), 3)
    img_w, img_h = img.size
    crop = (
        max(int(np.floor(q[:, 0].min())) - border, 0),
        max(int(np.floor(q[:, 1].min())) - border, 0),
        min(int(np.ceil(q[:, 0].max())) + border, img.size[0]),
        min(int(np.ceil(q[:, 1].max())) + border, img.size[1]),
    )
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise TlganError("the face square lies entirely outside the photo; check the landmarks")
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        q = q - crop[:2]
        local = _shift(-crop[0], -crop[1]) @ local

    pads = (
        max(-int(np.floor(q[:, 0].min())) + border, 0),
        max(-int(np.floor(q[:, 1].min())) + border, 0),
        max(int(np.ceil(q[:, 0].max())) - img.size[0] + border, 0),
        max(int(np.ceil(q[:, 1].max())) - img.size[1] + border, 0),
    )
    cut = (crop[0] == 0, crop[1] == 0, crop[2] == img_w, crop[3] == img_h)
    margins = [0.0, 0.0, 0.0, 0.0]
    if pad and max(pads) > border - 4:
        p = int(np.rint(qsize * 0.3))
        pads = tuple(max(v, p) for v in pads)
        # np.pad's reflect needs the pad smaller than the side; repeat for very small crops.
        arr = np.asarray(img)
        while any(v > 0 for v in pads):
            step = (
                min(pads[0], arr.shape[1] - 1),
                min(pads[1], arr.shape[0] - 1),
                min(pads[2], arr.shape[1] - 1),
                min(pads[3], arr.shape[0] - 1),
            )
            arr = _pad_reflect(arr, step, qsize)
            # The blur reaches a third of the pad into the photo on the sides cut by the photo's edge.
            for side in range(4):
                if step[side] and cut[side]:
                    margins[side] = max(margins[side], step[side] / 3.0 + 1.0)
            local = _shift(step[0], step[1]) @ local
            pads = tuple(a - b for a, b in zip(pads, step, strict=True))
        img = Image.fromarray(arr)

    # Warp to an intermediate size at most MAX_SUPERSAMPLE x the output (no upsampling beyond the
    # square's own pixels), then resize with an antialiasing filter: FFHQ's 4096 -> 1024 in spirit.
    factor = int(min(MAX_SUPERSAMPLE, max(1, math.ceil(qsize / size))))
    inter = size * factor
    warp = local @ transform.matrix @ np.diag([1.0 / factor, 1.0 / factor, 1.0])
    data = tuple(warp[:2].reshape(-1))
    out = img.transform((inter, inter), Image.AFFINE, data, Image.BILINEAR)
    if factor > 1:
        out = out.resize((size, size), Image.LANCZOS)
    if any(margins):
        to_photo = (W / img_w, H / img_h, W / img_w, H / img_h)  # the shrink, if any
        transform = dataclasses.replace(
            transform, margins=tuple(m * f for m, f in zip(margins, to_photo, strict=True))
        )
    return np.asarray(out), transform


def _shift(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
