"""Data sets in CelebA's own layout.

A CelebA-layout folder holds::

    img_align_celeba/           the images (png or jpg)
    list_attr_celeba.txt        line 1: number of images
                                line 2: attribute names, space-separated
                                then one row per image: ``filename v1 v2 ... vA``, values 1 / -1
    list_eval_partition.txt     optional; ``filename 0|1|2`` = train / val / test

Values may be separated by any run of spaces. A value of 0 is read as negative (some
re-distributions write 0/1 instead of -1/1). Without a partition file the split is
deterministic by row: the first 80% train, the next 10% val, the last 10% test.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tlgan.data.images import CACHE_DIR, IMAGE_SUFFIXES, load_image_stack
from tlgan.errors import TlganError

log = logging.getLogger(__name__)

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


@dataclass
class AttributeTable:
    """The parsed attribute file: ``values`` int8 (N, A) of 1 / -1 / 0, ``lines`` the 1-based line of each row."""

    attributes: list[str]
    filenames: list[str]
    values: np.ndarray
    lines: list[int]


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise TlganError(
            f"{path}: not a text file ({exc}); expected CelebA's list_attr_celeba.txt format"
        ) from None


def parse_attribute_file(path: str | os.PathLike) -> AttributeTable:
    """Parse a ``list_attr_celeba.txt``; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise TlganError(f"{path}: attribute file not found; a CelebA-layout folder needs {ATTR_FILE}")
    lines = _read_lines(path)
    if len(lines) < 2:
        raise TlganError(
            f"{path}: too short; line 1 must be the number of images and line 2 the attribute names"
        )
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise TlganError(
            f"{path}, line 1: expected the number of images, found {lines[0].strip()[:40]!r}"
        ) from None
    attributes = lines[1].split()
    if not attributes:
        raise TlganError(f"{path}, line 2: expected the attribute names, found an empty line")
    if len(set(attributes)) != len(attributes):
        dupes = sorted({a for a in attributes if attributes.count(a) > 1})
        raise TlganError(
            f"{path}, line 2: attribute names repeat ({', '.join(dupes)}); each name must be unique"
        )
    n_attr = len(attributes)
    filenames: list[str] = []
    rows: list[list[int]] = []
    line_numbers: list[int] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        name, fields = parts[0], parts[1:]
        if len(fields) != n_attr:
            raise TlganError(
                f"{path}, line {lineno}: {name} has {len(fields)} values but line 2 names {n_attr} attributes; "
                f"each row must be a filename followed by one 1/-1 per attribute"
            )
        try:
            row = [int(v) for v in fields]
        except ValueError:
            row = []
        if len(row) != n_attr or any(v not in (1, -1, 0) for v in row):
            bad = next((v for v in fields if v not in ("1", "-1", "0", "+1")), fields[0])
            col = fields.index(bad) if bad in fields else 0
            raise TlganError(
                f"{path}, line {lineno}: value {bad!r} for attribute {attributes[col]!r} of {name}; "
                f"values must be 1 (present) or -1 (absent)"
            )
        if name in seen:
            raise TlganError(
                f"{path}, line {lineno}: {name} is listed again (first on line {seen[name]}); "
                f"remove the duplicate"
            )
        seen[name] = lineno
        filenames.append(name)
        rows.append(row)
        line_numbers.append(lineno)
    if not filenames:
        raise TlganError(f"{path}: lists no images (no rows after the attribute names)")
    if count != len(filenames):
        raise TlganError(
            f"{path}, line 1: says {count} images but the file has {len(filenames)} rows; "
            f"the file is truncated or line 1 is wrong"
        )
    values = np.asarray(rows, dtype=np.int8).reshape(len(filenames), n_attr)
    return AttributeTable(attributes, filenames, values, line_numbers)


def parse_partition_file(path: str | os.PathLike) -> dict[str, int]:
    """Parse a ``list_eval_partition.txt`` into filename -> 0 (train) / 1 (val) / 2 (test)."""
    path = Path(path)
    out: dict[str, int] = {}
    for lineno, line in enumerate(_read_lines(path), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise TlganError(
                f"{path}, line {lineno}: expected 'filename 0|1|2' (train/val/test), "
                f"found {line.strip()[:60]!r}"
            )
        out[parts[0]] = int(parts[1])
    return out


def default_partition(n: int, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> np.ndarray:
    """Partition codes (n,) for a split by row index: first 80% train, next 10% val, rest test."""
    n_train = int(round(n * fractions[0]))
    n_val = int(round(n * (fractions[0] + fractions[1]))) - n_train
    codes = np.full(n, 2, dtype=np.int64)
    codes[:n_train] = 0
    codes[n_train : n_train + n_val] = 1
    return codes


class CelebAFolder:
    """One split of a CelebA-layout folder, decoded into memory.

    ``images`` uint8 (N, 3, R, R); ``labels`` float32 (N, A) of 0/1 (1 = attribute present);
    ``filenames`` (N,) in file order; ``attributes`` the A names from the attribute file.
    ``split`` is "train", "val", "test" or "all".
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        resolution: int = 64,
        cache: bool = True,
        progress: bool = True,
    ):
        self.root = Path(root)
        self.split = split
        self.resolution = int(resolution)
        if split not in (*SPLITS, "all"):
            raise TlganError(f"unknown split {split!r}; use train, val, test or all")
        if not self.root.is_dir():
            raise TlganError(
                f"{self.root}: data folder not found; expected a CelebA-layout folder with "
                f"{IMAGE_DIR}/ and {ATTR_FILE}"
            )
        image_dir = self.root / IMAGE_DIR
        if not image_dir.is_dir():
            raise TlganError(
                f"{image_dir}: image folder not found; a CelebA-layout folder keeps its images "
                f"in {IMAGE_DIR}/"
            )
        attr_path = self.root / ATTR_FILE
        table = parse_attribute_file(attr_path)
        self._attributes = tuple(table.attributes)

        part_path = self.root / PARTITION_FILE
        if part_path.is_file():
            mapping = parse_partition_file(part_path)
            missing = [f for f in table.filenames if f not in mapping]
            if missing:
                raise TlganError(
                    f"{part_path}: has no row for {missing[0]} (and {len(missing) - 1} more images of "
                    f"{ATTR_FILE}); list every image or delete the file to split 80/10/10 by row"
                )
            codes = np.array([mapping[f] for f in table.filenames], dtype=np.int64)
        else:
            log.info("%s not found; splitting 80/10/10 by row", part_path)
            codes = default_partition(len(table.filenames))
        keep = np.arange(len(codes)) if split == "all" else np.nonzero(codes == SPLITS[split])[0]
        if len(keep) == 0:
            raise TlganError(f"{self.root}: the {split} split is empty; check {PARTITION_FILE} or add images")

        on_disk = {
            p.name: p for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        }
        if not on_disk:
            raise TlganError(f"{image_dir}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} files)")
        by_stem: dict[str, Path] = {}
        for p in on_disk.values():
            by_stem.setdefault(p.stem, p)
        paths = []
        for i in keep:
            name = table.filenames[i]
            # Re-encoded copies of CelebA sometimes keep .jpg names for .png files: match by stem.
            path = on_disk.get(name) or by_stem.get(Path(name).stem)
            if path is None:
                raise TlganError(
                    f"{attr_path}, line {table.lines[i]}: image {name} is listed but not found in "
                    f"{image_dir}; restore it or remove its row (and fix the count on line 1)"
                )
            paths.append(path)

        self.filenames = [table.filenames[i] for i in keep]
        values = table.values[keep]
        self.labels = torch.from_numpy((values > 0).astype(np.float32))
        newest = max(attr_path.stat().st_mtime, part_path.stat().st_mtime if part_path.is_file() else 0.0)
        cache_file = self.root / CACHE_DIR / f"celeba-{split}-{self.resolution}px.npy" if cache else None
        self.images = load_image_stack(
            paths, self.resolution, cache_file, names=self.filenames, newer_than=newest, progress=progress
        )

    @property
    def attributes(self) -> tuple[str, ...]:
        """The attribute names, in the column order of ``labels``."""
        return self._attributes

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def positive_fraction(self) -> torch.Tensor:
        """Fraction of images with each attribute present, (A,)."""
        return self.labels.mean(dim=0)

    def __repr__(self) -> str:
        return (
            f"CelebAFolder({str(self.root)!r}, split={self.split!r}, {len(self)} images at {self.resolution}px, "
            f"{len(self.attributes)} attributes)"
        )
