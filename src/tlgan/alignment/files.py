"""Aligning photo files into a folder: names, what is already done, and the files written.

For a photo ``NAME.jpg`` the output folder gets, per face, ``NAME.png`` (the aligned face) and
``NAME.align.json`` (its :class:`~tlgan.alignment.ffhq.FaceTransform`); when several faces are
kept they are ``NAME-1``, ``NAME-2``, ... from the left. The JSON is written last, so its
presence (with the same size and face choice) marks a photo as done, and a rerun skips it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tlgan.errors import TlganError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
TRANSFORM_SUFFIX = ".align.json"


def expand_photos(paths: Iterable[str]) -> list[Path]:
    """Files as given, and each folder's image files (by suffix, sorted, not recursive).

    A folder without images is a TlganError naming it; a file is kept whatever its suffix (a
    damaged or non-image file is reported when it is read, without stopping the others).
    """
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in PHOTO_SUFFIXES)
            if not found:
                raise TlganError(f"{path}: no photos in this folder ({', '.join(PHOTO_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(path)
    return out


def unique_names(paths: list[Path]) -> list[str]:
    """Output names from file stems; repeated stems get -a2, -a3, ... so no output overwrites another."""
    seen: dict[str, int] = {}
    names = []
    for p in paths:
        stem = p.stem or "photo"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-a{seen[stem]}")
    return names


def transform_path(image_path: str | Path) -> Path:
    """``OUT/NAME.png`` or ``OUT/NAME.safetensors`` -> ``OUT/NAME.align.json``."""
    path = Path(image_path)
    return path.with_name(path.stem + TRANSFORM_SUFFIX)


def done_faces(out_dir: Path, name: str, size: int, face: str | int, source: Path) -> list[dict] | None:
    """The records of a photo aligned before with the same settings, or None if it must be (re)done."""
    first = [out_dir / f"{name}{TRANSFORM_SUFFIX}", out_dir / f"{name}-1{TRANSFORM_SUFFIX}"]
    for path in first:
        if not path.is_file():
            continue
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if meta.get("size") != size or meta.get("face_option") != str(face):
            return None
        if meta.get("source") != str(source.resolve()):
            return None
        stem = path.name[: -len(TRANSFORM_SUFFIX)]
        if stem == name:
            return [_record(out_dir / f"{name}.png", path, meta)]
        records, k = [], 1
        while (out_dir / f"{name}-{k}{TRANSFORM_SUFFIX}").is_file():
            p = out_dir / f"{name}-{k}{TRANSFORM_SUFFIX}"
            records.append(_record(out_dir / f"{name}-{k}.png", p, json.loads(p.read_text())))
            k += 1
        # Interrupted between two faces: not done.
        return records if len(records) == meta.get("faces_found") or str(face) != "all" else None
    return None


def _record(image: Path, transform: Path, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "aligned": str(image),
        "transform": str(transform),
        "face": meta.get("face"),
        "faces_found": meta.get("faces_found"),
        "box": meta.get("box"),
    }


def align_file(
    path: Path,
    name: str,
    out_dir: Path,
    *,
    size: int,
    face: str | int,
    detector,
) -> list[dict[str, Any]]:
    """Align the photo at ``path`` and write its faces into ``out_dir``; returns one record per face.

    TlganError (naming the file) for an unreadable photo or one without the face asked for;
    nothing is written for it then.
    """
    from PIL import Image

    from tlgan.alignment import align_photo, read_photo
    from tlgan.io import atomic_path, write_json

    photo = read_photo(path)
    source = str(path.resolve())
    faces = align_photo(photo, size=size, face=face, detector=detector, label=str(path), source=source)
    out_dir.mkdir(parents=True, exist_ok=True)
    several = len(faces) > 1
    records = []
    for k, aligned in enumerate(faces, start=1):
        stem = f"{name}-{k}" if several else name
        image_path, json_path = out_dir / f"{stem}.png", out_dir / f"{stem}{TRANSFORM_SUFFIX}"
        with atomic_path(image_path) as tmp:
            Image.fromarray(aligned.image).save(tmp, format="PNG")
        meta = {**aligned.transform.to_dict(), "face_option": str(face), "aligned_image": image_path.name}
        write_json(json_path, meta)
        records.append(_record(image_path, json_path, meta))
    return records
