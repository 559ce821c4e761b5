"""Faces framed the way a face generator was trained on them, and edits pasted back into the photo.

- :mod:`tlgan.alignment.ffhq`: FFHQ's crop from 68 landmarks (pure geometry, NumPy and Pillow);
- :mod:`tlgan.alignment.landmarks`: dlib's detector and landmark model (optional: ``tlgan[align]``);
- :mod:`tlgan.alignment.paste`: the inverse warp with a feathered mask.

The landmark model was trained on iBUG 300-W, whose licence excludes commercial use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from tlgan.alignment.ffhq import LANDMARK_MODEL_NOTE, FaceTransform, align_face, ffhq_quad
from tlgan.alignment.landmarks import DetectedFace, LandmarkDetector, NoFaceFound, parse_face, select_faces
from tlgan.alignment.paste import paste_back, paste_mask

__all__ = [
    "LANDMARK_MODEL_NOTE",
    "AlignedFace",
    "DetectedFace",
    "FaceTransform",
    "LandmarkDetector",
    "NoFaceFound",
    "align_face",
    "align_photo",
    "ffhq_quad",
    "parse_face",
    "paste_back",
    "paste_mask",
    "read_photo",
    "select_faces",
]


@dataclass(frozen=True)
class AlignedFace:
    """One aligned face: ``image`` (size, size, 3) uint8 and the ``transform`` back into its photo."""

    image: np.ndarray
    transform: FaceTransform


def align_photo(
    photo: np.ndarray,
    *,
    size: int = 1024,
    face: str | int = "all",
    detector: LandmarkDetector | None = None,
    label: str = "photo",
    source: str | None = None,
) -> list[AlignedFace]:
    """Detect the faces of ``photo`` (H, W, 3) uint8 and cut FFHQ's square for those ``face`` selects.

    ``face``: "all", "largest" or N (the N-th from the left, 1-based). ``detector`` is reused
    across photos when given (loading the landmark model takes ~0.5 s). Faces come left to
    right. NoFaceFound (a TlganError naming ``label``) when the photo has no such face;
    TlganError with the install command when dlib or its model is missing.
    """
    detector = detector or LandmarkDetector()
    faces = detector(photo)
    chosen = select_faces(faces, face, label)
    out = []
    for rank, found in chosen:
        image, transform = align_face(
            photo, found.landmarks, size, box=found.box, face=rank, faces_found=len(faces), source=source
        )
        out.append(AlignedFace(image, transform))
    return out


def read_photo(source: str | os.PathLike | bytes, *, name: str | None = None) -> np.ndarray:
    """Decode a photo file (path or bytes) into (H, W, 3) uint8 RGB at full size, EXIF rotation applied.

    The checks of :func:`tlgan.imaging.read_image` apply (missing, empty, damaged, oversized
    files and decompression bombs are a TlganError naming the file).
    """
    from tlgan.imaging import open_rgb

    img, _, _ = open_rgb(source, name=name)
    return np.asarray(img, dtype=np.uint8).copy()
