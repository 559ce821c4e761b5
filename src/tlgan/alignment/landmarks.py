"""Faces and their 68 landmarks in a photo, by dlib (an optional dependency: ``pip install 'tlgan[align]'``).

dlib's frontal face detector (HOG + linear SVM) finds the boxes; its shape predictor
``shape_predictor_68_face_landmarks.dat`` (an ensemble of regression trees, Kazemi and Sullivan
2014) places the 68 iBUG points in each box. The predictor was trained on the iBUG 300-W data
set, whose licence excludes commercial use; so are landmarks made with it.

A large photo is shrunk before detection (the detector's cost grows with the pixels, and a
face big enough to edit stays findable) and the boxes are mapped back; the landmarks are
then placed on the photo at full resolution.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tlgan.errors import TlganError

log = logging.getLogger(__name__)

MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = "pip install 'tlgan[align]' (dlib-bin and face-recognition-models)"
DETECT_SIDE = 640
"""Photos whose longer side exceeds this are shrunk to it for detection (faces down to ~1/8 of that side)."""
MODEL_ENV = "TLGAN_LANDMARK_MODEL"
SYSTEM_MODEL_DIRS = ("/usr/share/dlib",)  # Debian's libdlib-data


class NoFaceFound(TlganError):
    """The detector found no face (or not the one asked for) in a photo."""


@dataclass(frozen=True)
class DetectedFace:
    """One face: ``box`` (left, top, right, bottom) and ``landmarks`` (68, 2) float64 in the photo's
    pixel coordinates (pixel (i, j) centred at (i, j)); ``score`` the detector's confidence."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


def _dlib():
    try:
        import dlib
    except ImportError:
        raise TlganError(f"face alignment needs dlib, which is not installed: {INSTALL_HINT}") from None
    return dlib


def landmark_model_path() -> Path:
    """Where ``shape_predictor_68_face_landmarks.dat`` is: $TLGAN_LANDMARK_MODEL, the
    face-recognition-models package (found without importing it: its ``__init__`` needs
    pkg_resources), or Debian's libdlib-data. TlganError saying how to install it otherwise."""
    env = os.environ.get(MODEL_ENV)
    if env:
        path = Path(env)
        if not path.is_file():
            raise TlganError(f"${MODEL_ENV}={env}: no such file; point it at {MODEL_FILE}")
        return path
    candidates = []
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "models" / MODEL_FILE for p in spec.submodule_search_locations]
    candidates += [Path(d) / MODEL_FILE for d in SYSTEM_MODEL_DIRS]
    for path in candidates:
        if path.is_file():
            return path
    raise TlganError(
        f"the landmark model {MODEL_FILE} was not found: {INSTALL_HINT}, or set ${MODEL_ENV} to the file "
        f"(Debian: apt install libdlib-data). It was trained on iBUG 300-W, whose licence excludes "
        f"commercial use."
    )


class LandmarkDetector:
    """dlib's face detector and 68-point shape predictor, loaded once.

    ``detect_side``: the longer side (px) a photo is shrunk to for detection (None: never);
    ``upsample``: dlib's upsampling passes (1 finds faces half as big, at four times the cost);
    ``retry_upsample``: when no face is found, look once more with one more pass.
    Call it on a photo (H, W, 3) uint8 to get the faces, left to right.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        detect_side: int | None = DETECT_SIDE,
        upsample: int = 0,
        retry_upsample: bool = True,
    ):
        dlib = _dlib()
        self.model_path = Path(model_path) if model_path else landmark_model_path()
        self.detect_side = None if detect_side is None else int(detect_side)
        if self.detect_side is not None and self.detect_side < 80:
            raise TlganError(f"detect_side must be at least 80 px (dlib's smallest face), not {detect_side}")
        self.upsample = int(upsample)
        self.retry_upsample = bool(retry_upsample)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(self.model_path))
        self._rectangle = dlib.rectangle

    def __call__(self, photo: np.ndarray) -> list[DetectedFace]:
        """Every face of ``photo`` (H, W, 3) uint8, sorted by the box's centre from left to right."""
        photo = np.ascontiguousarray(photo)
        if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
            raise TlganError(f"photo must be (H, W, 3) uint8, not {photo.shape} {photo.dtype}")
        H, W = photo.shape[:2]
        scale = 1.0
        small = photo
        if self.detect_side is not None and max(H, W) > self.detect_side:
            scale = self.detect_side / max(H, W)
            size = (max(1, round(W * scale)), max(1, round(H * scale)))
            small = np.asarray(Image.fromarray(photo).resize(size, Image.BILINEAR, reducing_gap=2.0))
            sx, sy = size[0] / W, size[1] / H
        else:
            sx = sy = 1.0
        rects, scores, _ = self._detector.run(small, self.upsample, 0.0)
        if not rects and self.retry_upsample:
            # Small faces (40-80 px in the detection view) need one more upsampling pass; only
            # photos without a larger face pay its 4x cost.
            rects, scores, _ = self._detector.run(small, self.upsample + 1, 0.0)
        faces = []
        for rect, score in zip(rects, scores, strict=True):
            # Continuous coordinates scale; pixel centres sit half a pixel in.
            box = (
                (rect.left() + 0.5) / sx - 0.5,
                (rect.top() + 0.5) / sy - 0.5,
                (rect.right() + 0.5) / sx - 0.5,
                (rect.bottom() + 0.5) / sy - 0.5,
            )
            full = self._rectangle(*(int(round(v)) for v in box))
            shape = self._predictor(photo, full)
            points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)
            faces.append(DetectedFace(box, points, float(score)))
        faces.sort(key=lambda f: (f.box[0] + f.box[2]) / 2)
        return faces


def select_faces(
    faces: list[DetectedFace], which: str | int, label: str = "photo"
) -> list[tuple[int, DetectedFace]]:
    """The faces ``which`` asks for, as (rank from the left, 1-based, face) pairs.

    ``which``: "all", "largest" (by box area; the detector's score breaks near ties), or N (the N-th from the left, 1-based; "2" works
    too). NoFaceFound (a TlganError) naming ``label`` when there is no face or no N-th face.
    """
    if not faces:
        raise NoFaceFound(
            f"{label}: no face found; the detector needs a frontal, upright face of at least ~40 px "
            f"once the photo is shrunk to --detect-side ({DETECT_SIDE} px by default); crop closer to "
            f"the face, or raise --detect-side"
        )
    which = parse_face(which)
    ranked = list(enumerate(faces, start=1))
    if which == "all":
        return ranked
    if which == "largest":
        # dlib's boxes come in few sizes: among those within 10% of the largest, the most confident.
        top = max(f.area for f in faces)
        return [max((item for item in ranked if item[1].area >= 0.9 * top), key=lambda item: item[1].score)]
    if which > len(faces):
        raise NoFaceFound(f"{label}: face {which} from the left was asked for, but only {len(faces)} found")
    return [ranked[which - 1]]


def parse_face(which: str | int) -> str | int:
    """``--face``: "all", "largest" or a positive integer N (the N-th face from the left)."""
    if isinstance(which, str) and which.strip().lower() in ("all", "largest"):
        return which.strip().lower()
    try:
        n = int(which)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise TlganError(
            f"--face must be 'all', 'largest' or N >= 1 (the N-th face from the left), not {which!r}"
        )
    return n
