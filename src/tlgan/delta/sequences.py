"""Sequence folders: the training data of learned edits.

A *sequence folder* holds one sub-folder per sequence; each sub-folder holds the images of
one identity in order (files sorted by name, numbers compared as numbers: ``2.png`` before
``10.png``), and every sequence has the same number of steps, the same factor changing by
the same amounts. Optional files beside the sub-folders:

- ``sequences.json``: ``{"format": "tlgan.sequences/1", "factor": "yaw", "values": [...]}``
  (the factor's value at each step; without it the steps are 0, 1, 2, ...), plus whatever
  the producer recorded (``tlgan toyfaces sequences`` records each identity's latent and
  factors);
- ``latents.safetensors``: the sequences' inverted latents, (K, n, *latent shape), written
  by :func:`sequence_latents` and reused while the generator, space and inversion settings
  stay the same.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.io import load_tensors, read_json, save_tensors, write_json

log = logging.getLogger(__name__)

FORMAT = "tlgan.sequences/1"
LATENTS_FORMAT = "tlgan.sequence-latents/1"
META_FILE = "sequences.json"
LATENTS_FILE = "latents.safetensors"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _natural_key(path: Path):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


@dataclass
class SequenceSet:
    """A validated sequence folder: ``names`` (K,), ``files`` K lists of n image paths,
    ``values`` (n,) the factor's value per step, ``factor`` its name (or None), ``meta``
    the rest of ``sequences.json``."""

    root: Path
    names: list[str]
    files: list[list[Path]]
    values: list[float]
    factor: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_sequences(self) -> int:
        return len(self.names)

    @property
    def n_steps(self) -> int:
        return len(self.values)

    def images(self, resolution: int) -> torch.Tensor:
        """All images as (K, n, 3, R, R) in [-1, 1] (centre-cropped, resized to ``resolution``)."""
        from tlgan.imaging import read_image

        rows = []
        for files in self.files:
            rows.append(torch.stack([read_image(path, resolution)[0] for path in files]))
        return torch.stack(rows)


def read_sequences(directory: str | os.PathLike) -> SequenceSet:
    """Read and check a sequence folder (see the module docstring).

    Raises TlganError naming the problem for: a missing folder, a folder without
    sequence sub-folders, a sequence with fewer than two images, sequences of unequal
    lengths, ``values`` of the wrong length or not numbers. Images are decoded only by
    :meth:`SequenceSet.images` (which names any unreadable file).
    """
    root = Path(directory)
    if not root.is_dir():
        raise TlganError(
            f"{root}: no such sequence folder; make one with `tlgan toyfaces sequences --out {root}` "
            f"or put one sub-folder of ordered images per sequence in it"
        )
    subdirs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_natural_key
    )
    names, files = [], []
    for sub in subdirs:
        images = sorted(
            (
                p
                for p in sub.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            ),
            key=_natural_key,
        )
        if not images:
            log.debug("%s: no images, not a sequence", sub)
            continue
        names.append(sub.name)
        files.append(images)
    if not names:
        raise TlganError(
            f"{root}: holds no sequences; a sequence folder needs one sub-folder per sequence with its "
            f"images in order (e.g. {root}/person1/000.png, 001.png, ...)"
        )
    lengths = {name: len(f) for name, f in zip(names, files, strict=True)}
    short = [name for name, n in lengths.items() if n < 2]
    if short:
        raise TlganError(
            f"{root}: sequence {short[0]!r} has {lengths[short[0]]} image; every sequence needs at least "
            f"two steps (the same change drawn for each identity)"
        )
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name}: {n}" for name, n in lengths.items())
        raise TlganError(
            f"{root}: sequences have unequal lengths ({detail}); every sequence must show the same "
            f"change in the same steps, so give them all the same number of images"
        )
    n = len(files[0])
    meta: dict[str, Any] = {}
    if (root / META_FILE).is_file():
        meta = read_json(root / META_FILE)
        if not isinstance(meta, dict):
            raise TlganError(f"{root / META_FILE}: must hold a JSON object")
    values = meta.get("values")
    if values is None:
        values = list(range(n))
    else:
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError):
            raise TlganError(
                f"{root / META_FILE}: 'values' must be a list of numbers, one per step"
            ) from None
        if len(values) != n:
            raise TlganError(
                f"{root / META_FILE}: 'values' has {len(values)} entries but each sequence has {n} "
                f"images; give one factor value per step"
            )
    if len(set(values)) != len(values):
        raise TlganError(
            f"{root / META_FILE}: 'values' repeats a value ({values}); each step must change the factor"
        )
    factor = meta.get("factor")
    return SequenceSet(
        root=root,
        names=names,
        files=files,
        values=[float(v) for v in values],
        factor=None if factor is None else str(factor),
        meta=meta,
    )


def write_sequences(
    directory: str | os.PathLike,
    images: torch.Tensor,
    *,
    values: Sequence[float],
    factor: str | None = None,
    names: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> SequenceSet:
    """Write images (K, n, 3, R, R) in [-1, 1] as a sequence folder and return it read back."""
    from tlgan.imaging import save_image

    if images.ndim != 5 or images.shape[2] != 3:
        raise TlganError(f"sequence images must be (K, n, 3, R, R); got shape {tuple(images.shape)}")
    k, n = images.shape[:2]
    names = [f"seq{i:03d}" for i in range(k)] if names is None else [str(s) for s in names]
    if len(names) != k or len(values) != n:
        raise TlganError(
            f"{k} sequences of {n} steps need {k} names and {n} values; got {len(names)} and {len(values)}"
        )
    root = Path(directory)
    width = max(3, len(str(n - 1)))
    for name, row in zip(names, images, strict=True):
        for step, image in enumerate(row):
            save_image(image, root / name / f"{step:0{width}d}.png")
    meta = {"format": FORMAT, "factor": factor, "values": [float(v) for v in values], **(extra or {})}
    write_json(root / META_FILE, meta)
    return read_sequences(root)


def _files_fingerprint(sequences: SequenceSet) -> str:
    """Names, sizes and modification times of every image: replaced images invalidate saved latents."""
    h = hashlib.sha256()
    for files in sequences.files:
        for path in files:
            st = path.stat()
            h.update(f"{path.parent.name}/{path.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _latent_key(
    generator_name: str, fingerprint: str, space: str, inversion: dict[str, Any], files: str
) -> dict[str, Any]:
    return {
        "generator": generator_name,
        "generator_fingerprint": fingerprint,
        "space": space,
        "inversion": inversion,
        "files": files,
    }


def sequence_latents(
    sequences: SequenceSet,
    generator,
    *,
    space: str = "z",
    encoder: Any = "auto",
    classifier=None,
    steps: int = 100,
    patience: int | None = None,
    cache: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """The sequences' latents in ``generator``'s space ``space``: (K, n, *latent shape).

    Read from ``latents.safetensors`` when it was written for this generator (by weights
    fingerprint), space and inversion settings; otherwise every image is inverted with
    :func:`tlgan.inversion.invert` (encoder ``"auto"``: the generator's own, if it has one;
    ``steps`` optimisation steps; ``patience``, when given, the early stop's patience, large
    to run every step; ``classifier`` adds the feature loss) and, with ``cache``, the
    result is written there.
    """
    from tlgan.inversion.encoder import generator_fingerprint
    from tlgan.inversion.optimize import invert
    from tlgan.models.zoo import bundled_encoder

    if space != "z":
        # invert() optimises z; W / W+ inversion plugs in here once the inversion API takes a space.
        raise TlganError(
            f"inverting sequences into space {space!r} is not available yet; use space 'z', or write "
            f"{LATENTS_FILE} with latents of shape (K, n, ...) yourself"
        )
    fingerprint = generator_fingerprint(generator)
    inversion = {
        "steps": int(steps),
        "encoder": "auto" if isinstance(encoder, str) else ("none" if encoder is None else "given"),
        "classifier": getattr(classifier, "name", None),
    }
    if patience is not None:
        inversion["patience"] = int(patience)
    key = _latent_key(generator.name, fingerprint, space, inversion, _files_fingerprint(sequences))
    path = sequences.root / LATENTS_FILE
    if path.is_file():
        tensors, meta = load_tensors(path)
        shape_ok = "latents" in tensors and tuple(tensors["latents"].shape[:2]) == (
            sequences.n_sequences,
            sequences.n_steps,
        )
        if shape_ok and {k: meta.get(k) for k in key} == key and meta.get("names") == sequences.names:
            return tensors["latents"].float()
        log.info("%s was written for other settings or images; inverting again", path)
    if isinstance(encoder, str):
        encoder = bundled_encoder(generator)
    images = sequences.images(generator.img_resolution)
    k, n = images.shape[:2]
    result = invert(
        generator,
        images.flatten(0, 1),
        encoder=encoder,
        classifier=classifier,
        steps=steps,
        progress=progress,
        **({} if patience is None else {"patience": int(patience)}),
    )
    latents = result.latents.reshape(k, n, *result.latents.shape[1:])
    if cache:
        save_tensors(
            path,
            {"latents": latents, "psnr_db": result.psnr_db.reshape(k, n)},
            {"format": LATENTS_FORMAT, **key, "names": sequences.names},
        )
    log.info("inverted %d images of %s: PSNR %.2f dB", k * n, sequences.root, float(result.psnr_db.mean()))
    return latents


__all__ = [
    "SequenceSet",
    "read_sequences",
    "write_sequences",
    "sequence_latents",
    "FORMAT",
    "META_FILE",
    "LATENTS_FILE",
]
