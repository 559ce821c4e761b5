"""Export toyfaces as a data set in CelebA's own file layout.

``OUT/img_align_celeba/000001.png ...``  64x64 RGB PNGs, 1-based names as in CelebA;
``OUT/list_attr_celeba.txt``             line 1 the count, line 2 the attribute names, then
                                         ``filename`` and one ``1`` / ``-1`` per attribute;
``OUT/list_eval_partition.txt``          ``filename 0|1|2`` (train / val / test);
``OUT/toyfaces.json``                    seed, n, attribute and factor names, partition.

Face ``i`` (0-based; file ``i + 1``) is the face of latent index ``i`` of ``seed`` from
:meth:`tlgan.models.base.Generator.sample_latents`, so any export can be reproduced and
resumed: images already on disk are not rendered again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from tlgan.errors import TlganError
from tlgan.imaging import to_uint8
from tlgan.io import atomic_path, read_json, write_json
from tlgan.toyfaces import world
from tlgan.toyfaces.generator import ToyfacesRenderer

log = logging.getLogger(__name__)

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
META_FILE = "toyfaces.json"
FORMAT = "tlgan.toyfaces-celeba/1"


@dataclass
class ExportResult:
    """What :func:`export_celeba` did: the folder, face count, and how many were drawn now."""

    out_dir: Path
    n: int
    rendered: int
    reused: int


def image_name(index: int) -> str:
    """File name of face ``index`` (0-based): ``000001.png`` for index 0, as in CelebA."""
    return f"{index + 1:06d}.png"


def partition_counts(n: int, partition: Sequence[float]) -> tuple[int, int, int]:
    """Split n faces into (train, val, test) counts by the fractions in ``partition``."""
    if len(partition) != 3:
        raise TlganError(f"partition needs three fractions (train, val, test); got {tuple(partition)}")
    fr = [float(p) for p in partition]
    if any(p < 0 for p in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise TlganError(f"partition fractions must be >= 0 and sum to 1; got {tuple(fr)}")
    n_train = int(round(n * fr[0]))
    n_val = min(n - n_train, int(round(n * fr[1])))
    return n_train, n_val, n - n_train - n_val


def attribute_lines(names: Sequence[str], labels: np.ndarray) -> list[str]:
    """The lines of list_attr_celeba.txt for ``labels`` (N, A) bool, with CelebA's spacing."""
    lines = [str(len(labels)), " ".join(world.ATTRIBUTES)]
    for name, row in zip(names, labels, strict=True):
        # CelebA right-aligns each value in two columns: "000001.jpg -1  1  1 -1 ..."
        lines.append(name + " " + " ".join(" 1" if v else "-1" for v in row))
    return lines


def _write_lines(path: Path, lines: Sequence[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _write_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=1)  # lossless; fast to write


def export_celeba(
    out_dir: str | os.PathLike,
    n: int,
    seed: int = 0,
    partition: Sequence[float] = (0.8, 0.1, 0.1),
    batch_size: int = 256,
    resume: bool = True,
    progress: bool = True,
) -> ExportResult:
    """Render ``n`` toyfaces of ``seed`` into ``out_dir`` in CelebA's layout (see module docs).

    Args:
        out_dir: folder to create or complete.
        n: number of faces (>= 1).
        seed: latent seed; face i is latent index i of this seed.
        partition: (train, val, test) fractions; faces are assigned in order, as in CelebA.
        batch_size: faces rendered per batch.
        resume: keep images already in ``out_dir`` (they were written atomically, so they are
            whole); with False every image is drawn again.
        progress: show a tqdm progress bar.

    Returns:
        An :class:`ExportResult`. The text files are (re)written atomically at the end.
    """
    n, batch_size = int(n), int(batch_size)
    if n < 1:
        raise TlganError(f"n must be >= 1; got {n}")
    if batch_size < 1:
        raise TlganError(f"batch_size must be >= 1; got {batch_size}")
    counts = partition_counts(n, partition)
    out = Path(out_dir)
    image_dir = out / IMAGE_DIR
    meta_path = out / META_FILE
    if meta_path.is_file() and resume:
        old = read_json(meta_path)
        if old.get("seed") != int(seed):
            raise TlganError(
                f"{out} holds a toyfaces export of seed {old.get('seed')}, not {seed}; "
                "use another folder, the same seed, or resume=False (--no-resume) to redraw it"
            )
    image_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "seed": int(seed),
        "n": n,
        "generator": ToyfacesRenderer.name,
        "resolution": 64,
        "attributes": list(world.ATTRIBUTES),
        "factors": {"attributes": dict(world.FACTOR_OF), "nuisances": list(world.NUISANCES)},
        "partition": {"fractions": [float(p) for p in partition], "counts": list(counts)},
        "basis_seed": world.BASIS_SEED,
        "complete": False,
    }
    write_json(meta_path, meta)  # marks the folder's seed before any image exists

    G = ToyfacesRenderer()
    names = [image_name(i) for i in range(n)]
    labels = np.zeros((n, len(world.ATTRIBUTES)), dtype=bool)
    rendered = reused = 0
    bar = tqdm(total=n, unit="face", desc="toyfaces export", disable=not progress)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            z = G.sample_latents_at(idx, seed=int(seed))
            labels[idx] = world.labels(z).numpy()
            todo = [k for k, i in enumerate(idx) if not (resume and (image_dir / names[i]).is_file())]
            reused += len(idx) - len(todo)
            if todo:
                arrays = to_uint8(G.synthesize(z[todo]))
                for k, array in zip(todo, arrays, strict=True):
                    _write_png(array, image_dir / names[idx[k]])
                rendered += len(todo)
            bar.update(len(idx))
    bar.close()

    _write_lines(out / ATTR_FILE, attribute_lines(names, labels))
    split = np.repeat([0, 1, 2], counts)
    _write_lines(out / PARTITION_FILE, [f"{name} {p}" for name, p in zip(names, split, strict=True)])
    meta["complete"] = True
    meta["label_frequencies"] = {
        a: float(f) for a, f in zip(world.ATTRIBUTES, labels.mean(axis=0), strict=True)
    }
    write_json(meta_path, meta)
    log.info("exported %d toyfaces to %s (%d drawn, %d kept from before)", n, out, rendered, reused)
    return ExportResult(out, n, rendered, reused)
