"""Decoding image files into one uint8 tensor, caching it, and serving shuffled batches.

Every image goes through the same steps as a photo given for inversion
(:func:`tlgan.imaging.decode_rgb`): Pillow decode (EXIF rotation applied, decompression bombs
refused), convert to RGB, centre crop to a square, resize to ``resolution`` with LANCZOS. The decoded stack (N, 3, R, R) uint8 is
cached as a ``.npy`` file under ``<root>/.tlgan-cache/`` with a small JSON sidecar that
records which files it holds, so the second load of a data set costs one ``np.load``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from tlgan.errors import TlganError
from tlgan.imaging import decode_rgb
from tlgan.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CACHE_DIR = ".tlgan-cache"
# 2: images decoded upright (EXIF rotation) and transparency over white, as photos are.
CACHE_FORMAT = "tlgan.image-cache/2"


def decode_image(path: str | os.PathLike, resolution: int) -> np.ndarray:
    """One image file -> uint8 array (3, R, R): RGB, centre-cropped square, LANCZOS-resized.

    The same decoder as photos given for inversion (:func:`tlgan.imaging.decode_rgb`): EXIF
    rotation applied, transparency over white, decompression bombs refused; JPEGs are decoded
    in draft mode at no less than twice ``resolution``. Raises TlganError naming the file when
    it cannot be decoded.
    """
    path = Path(path)
    try:
        arr, _ = decode_rgb(path, resolution, min_side=1, draft=True)
    except TlganError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise TlganError(f"{path}: cannot decode this image ({reason}); replace or remove the file") from None
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _digest(names: Sequence[str], resolution: int) -> str:
    h = hashlib.sha1(f"{resolution}\n".encode())
    for name in names:
        h.update(name.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def load_image_stack(
    paths: Sequence[Path],
    resolution: int,
    cache_file: Path | None = None,
    names: Sequence[str] | None = None,
    newer_than: float = 0.0,
    progress: bool = True,
) -> torch.Tensor:
    """Decode ``paths`` into a uint8 tensor (N, 3, R, R), through an optional ``.npy`` cache.

    The cache is reused only if its sidecar lists the same ``names`` (default: the paths)
    at the same resolution and the cache file is newer than ``newer_than`` (a POSIX
    modification time, e.g. of the label file); otherwise it is rebuilt. A cache that
    cannot be written (read-only data folder) is skipped with a warning.
    """
    if resolution < 4:
        raise TlganError(f"resolution must be at least 4 pixels, not {resolution}")
    names = [str(p) for p in paths] if names is None else list(names)
    digest = _digest(names, resolution)
    if cache_file is not None:
        cached = _read_cache(cache_file, digest, len(names), resolution, newer_than)
        if cached is not None:
            return cached
    stack = np.empty((len(paths), 3, resolution, resolution), dtype=np.uint8)
    bar = tqdm(
        paths,
        desc=f"decoding images at {resolution}px",
        unit="img",
        disable=None if progress else True,
        leave=False,
    )
    for i, path in enumerate(bar):
        stack[i] = decode_image(path, resolution)
    if cache_file is not None:
        _write_cache(cache_file, stack, digest)
    return torch.from_numpy(stack)


def _read_cache(
    cache_file: Path, digest: str, n: int, resolution: int, newer_than: float
) -> torch.Tensor | None:
    sidecar = cache_file.with_suffix(".json")
    if not cache_file.is_file() or not sidecar.is_file():
        return None
    if cache_file.stat().st_mtime < newer_than:
        log.info("%s is older than its labels; decoding the images again", cache_file)
        return None
    try:
        meta = read_json(sidecar)
        if meta.get("format") != CACHE_FORMAT or meta.get("digest") != digest:
            log.info("%s holds a different set of images; decoding again", cache_file)
            return None
        arr = np.load(cache_file, allow_pickle=False)
    except (TlganError, OSError, ValueError) as exc:
        log.warning("ignoring unreadable image cache %s (%s)", cache_file, exc)
        return None
    if arr.dtype != np.uint8 or arr.shape != (n, 3, resolution, resolution):
        log.warning("ignoring image cache %s with shape %s", cache_file, arr.shape)
        return None
    log.info("loaded %d decoded images from %s", n, cache_file)
    return torch.from_numpy(arr)


def _write_cache(cache_file: Path, stack: np.ndarray, digest: str) -> None:
    try:
        with atomic_path(cache_file) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, stack, allow_pickle=False)
        write_json(
            cache_file.with_suffix(".json"),
            {"format": CACHE_FORMAT, "digest": digest, "shape": list(stack.shape)},
        )
    except OSError as exc:
        log.warning(
            "could not write the image cache %s (%s); images will be decoded again next time", cache_file, exc
        )


def find_images(folder: Path) -> list[Path]:
    """All image files under ``folder`` (recursively, hidden folders skipped), sorted by relative path."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                found.append(Path(dirpath) / name)
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


class ImageFolder:
    """Every image under ``root`` (recursively), decoded into ``images`` uint8 (N, 3, R, R).

    A CelebA-layout root (one holding ``img_align_celeba/``) works too: its image folder is
    used. ``paths`` lists the files in the order of ``images``. The decoded stack is cached
    in ``<root>/.tlgan-cache/`` and rebuilt when a file is added, removed or modified.
    """

    def __init__(
        self, root: str | os.PathLike, resolution: int = 64, cache: bool = True, progress: bool = True
    ):
        self.root = Path(root)
        self.resolution = int(resolution)
        if not self.root.is_dir():
            raise TlganError(
                f"{self.root}: image folder not found; pass a folder of png/jpg images (searched recursively)"
            )
        folder = self.root / "img_align_celeba" if (self.root / "img_align_celeba").is_dir() else self.root
        self.paths = find_images(folder)
        if not self.paths:
            raise TlganError(
                f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files, recursively)"
            )
        names = [p.relative_to(folder).as_posix() for p in self.paths]
        newest = max(p.stat().st_mtime for p in self.paths)
        cache_file = self.root / CACHE_DIR / f"images-all-{self.resolution}px.npy" if cache else None
        self.images = load_image_stack(
            self.paths, self.resolution, cache_file, names=names, newer_than=newest, progress=progress
        )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images at {self.resolution}px)"


def to_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, R, R) in 0..255 -> float32 in [-1, 1] (0 -> -1, 255 -> 1)."""
    return images.to(torch.float32) / 127.5 - 1.0


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A torch.Generator that depends only on (seed, epoch)."""
    state = np.random.SeedSequence([int(seed) % (2**63), int(epoch)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class BatchSampler:
    """Shuffled float batches where batch ``step`` depends only on (seed, step, batch_size).

    The data are read as an endless stream of epochs; epoch e is a permutation drawn from
    a generator seeded by (seed, e), and batch k is items k*B .. (k+1)*B-1 of the stream,
    so a run resumed at step k sees exactly the batches an uninterrupted run would. Images
    stay uint8 (on ``device``) until a batch is cut, then become float in [-1, 1].

    ``flip`` mirrors each image left-right with probability 1/2 (decided per epoch and
    position, so also reproducible). Leave it off when labels depend on left and right.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None = None,
        batch_size: int = 64,
        seed: int = 0,
        flip: bool = False,
        device: str | torch.device = "cpu",
    ):
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise TlganError(
                f"BatchSampler needs uint8 images (N, 3, R, R); got {images.dtype} {tuple(images.shape)}"
            )
        if len(images) == 0:
            raise TlganError("BatchSampler got no images")
        if labels is not None and len(labels) != len(images):
            raise TlganError(f"{len(images)} images but {len(labels)} label rows")
        if batch_size < 1:
            raise TlganError(f"batch size must be at least 1, not {batch_size}")
        self.images = images.to(device)
        self.labels = None if labels is None else labels.to(device)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.flip = bool(flip)
        self._epoch = -1
        self._order: torch.Tensor = torch.empty(0, dtype=torch.long)
        self._flips: torch.Tensor = torch.empty(0, dtype=torch.bool)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _epoch_plan(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if epoch != self._epoch:
            g = epoch_generator(self.seed, epoch)
            self._order = torch.randperm(len(self), generator=g)
            self._flips = torch.rand(len(self), generator=g) < 0.5
            self._epoch = epoch
        return self._order, self._flips

    def indices(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Dataset indices (B,) of batch ``step`` and whether each is flipped (B,) bool."""
        n, b = len(self), self.batch_size
        idx, flips = [], []
        pos = step * b
        while len(idx) < b:
            epoch, offset = divmod(pos, n)
            order, flip = self._epoch_plan(epoch)
            take = min(b - len(idx), n - offset)
            idx.extend(order[offset : offset + take].tolist())
            flips.extend(flip[offset : offset + take].tolist())
            pos += take
        return torch.tensor(idx, dtype=torch.long), torch.tensor(flips, dtype=torch.bool)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(images float (B, 3, R, R) in [-1, 1], labels (B, A) or None) for batch ``step``."""
        idx, flips = self.indices(step)
        idx = idx.to(self.images.device)
        images = to_float_images(self.images[idx])
        if self.flip and bool(flips.any()):
            flips = flips.to(images.device)
            images = torch.where(flips[:, None, None, None], images.flip(-1), images)
        labels = None if self.labels is None else self.labels[idx]
        return images, labels

    def iterate(
        self, start_step: int = 0, steps: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """Batches ``start_step``, ``start_step + 1``, ... (``steps`` of them, or endless)."""
        step = start_step
        while steps is None or step < start_step + steps:
            yield self.batch(step)
            step += 1
