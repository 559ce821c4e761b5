"""The (edited) aligned face back in its photo: the inverse of the alignment warp, with a feathered mask.

Only the photo pixels whose centres fall inside the aligned square change; the mask is 1 in
the square's interior and falls to 0 over a band of ``feather`` (a fraction of the square's
side) toward its edges, so the pasted face blends into the photo without a seam. Where the
mask is 0 the result is the photo's own pixels, exactly.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from tlgan.alignment.ffhq import FaceTransform
from tlgan.errors import TlganError

DEFAULT_FEATHER = 0.1


def paste_mask(
    transform: FaceTransform, feather: float = DEFAULT_FEATHER
) -> tuple[np.ndarray, tuple[int, int]]:
    """The blending weights of the aligned square in the photo.

    Returns (mask (h, w) float32 in [0, 1], (x0, y0)): the mask covers the photo pixels
    [x0, x0 + w) x [y0, y0 + h), the bounding box of the square clipped to the photo; every
    pixel outside that box has weight 0. ``feather`` in (0, 0.5]: the width of the fade as a
    fraction of the square's side (smoothstep from 0 at the edge to 1 inside).
    """
    if not 0.0 < float(feather) <= 0.5:
        raise TlganError(f"feather must be in (0, 0.5] (a fraction of the face square), not {feather}")
    W, H = transform.photo_size
    corners = np.array(
        [[0, 0], [0, transform.size], [transform.size, transform.size], [transform.size, 0]], float
    )
    photo_corners = corners @ transform.matrix[:2, :2].T + transform.matrix[:2, 2]
    x0 = max(0, int(math.floor(photo_corners[:, 0].min())))
    y0 = max(0, int(math.floor(photo_corners[:, 1].min())))
    x1 = min(W, int(math.ceil(photo_corners[:, 0].max())))
    y1 = min(H, int(math.ceil(photo_corners[:, 1].max())))
    if x1 <= x0 or y1 <= y0:
        return np.zeros((0, 0), np.float32), (0, 0)
    inv = transform.inverse
    xs = np.arange(x0, x1, dtype=np.float64) + 0.5
    ys = np.arange(y0, y1, dtype=np.float64) + 0.5
    u = inv[0, 0] * xs[None, :] + inv[0, 1] * ys[:, None] + inv[0, 2]
    v = inv[1, 0] * xs[None, :] + inv[1, 1] * ys[:, None] + inv[1, 2]
    # Distance to the square's nearest edge, as a fraction of its side (negative outside).
    edge = np.minimum(np.minimum(u, transform.size - u), np.minimum(v, transform.size - v)) / transform.size
    weight = _smoothstep(edge / float(feather))
    # Near a photo edge where alignment had to pad, the aligned face holds blurred photo pixels:
    # fade out over half a margin beyond the margin, so those pixels are never pasted back.
    left, top, right, bottom = transform.margins
    for margin, distance in (
        (left, xs[None, :]),
        (top, ys[:, None]),
        (right, W - xs[None, :]),
        (bottom, H - ys[:, None]),
    ):
        if margin > 0:
            weight = weight * _smoothstep((distance - margin) / (0.5 * margin + 1.0))
    return weight.astype(np.float32), (x0, y0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def paste_back(
    photo: np.ndarray,
    face: np.ndarray,
    transform: FaceTransform,
    *,
    reference: np.ndarray | None = None,
    feather: float = DEFAULT_FEATHER,
) -> np.ndarray:
    """``photo`` (H, W, 3) uint8 with ``face`` (S, S, 3) uint8 warped back into the square ``transform`` cut.

    ``face`` may be of any square size (a generator's resolution): the transform is rescaled to
    it. The face is sampled bilinearly at each photo pixel's centre (so a face much denser
    than the photo is point-sampled, which keeps a round trip of the aligned crop itself close:
    at 1024 px, astronaut.png comes back within 1/255 on average).

    With ``reference`` (S, S, 3) uint8, the face as it was before the edit (e.g. the generator's
    reconstruction of the unedited latent), only the *change* ``face - reference`` is warped
    and added to the photo inside the mask: the photo keeps its own detail wherever the edit
    changed nothing, and a face equal to its reference gives back the photo exactly.

    Returns a new (H, W, 3) uint8 photo; pixels where :func:`paste_mask` is 0 are
    the photo's, exactly. TlganError if the photo's size is not the one the transform was made for.
    """
    photo = np.asarray(photo)
    face = np.asarray(face)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise TlganError(f"photo must be (H, W, 3) uint8, not {photo.shape} {photo.dtype}")
    if face.ndim != 3 or face.shape[2] != 3 or face.shape[0] != face.shape[1] or face.dtype != np.uint8:
        raise TlganError(f"face must be (S, S, 3) uint8, not {face.shape} {face.dtype}")
    if (photo.shape[1], photo.shape[0]) != tuple(transform.photo_size):
        raise TlganError(
            f"the photo is {photo.shape[1]}x{photo.shape[0]} but the face was aligned from a "
            f"{transform.photo_size[0]}x{transform.photo_size[1]} photo; paste into the photo it came from"
        )
    if reference is not None:
        reference = np.asarray(reference)
        if reference.shape != face.shape or reference.dtype != np.uint8:
            raise TlganError(
                f"reference must be uint8 of the face's shape {face.shape}, not {reference.shape}"
            )
    t = transform.resized(face.shape[0])
    mask, (x0, y0) = paste_mask(t, feather)
    out = photo.copy()
    if mask.size == 0:
        return out
    h, w = mask.shape
    # PIL's AFFINE maps output (box) coordinates to input (face) coordinates: face <- photo box.
    to_face = t.inverse @ np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    data = tuple(to_face[:2].reshape(-1))
    region = out[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    m = mask[..., None]
    if reference is None:
        warped = np.asarray(Image.fromarray(face).transform((w, h), Image.AFFINE, data, Image.BILINEAR))
        blended = region * (1.0 - m) + warped * m
    else:
        # The change, as float32 channels: PIL warps each "F" band separately.
        change = face.astype(np.float32) - reference.astype(np.float32)
        warped = np.stack(
            [
                np.asarray(
                    Image.fromarray(change[..., c]).transform((w, h), Image.AFFINE, data, Image.BILINEAR)
                )
                for c in range(3)
            ],
            axis=-1,
        )
        blended = region + warped * m
    blended = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    out[y0 : y0 + h, x0 : x0 + w] = np.where(m > 0, blended, out[y0 : y0 + h, x0 : x0 + w])
    return out
