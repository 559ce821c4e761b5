"""InterFaceGAN boundary files: one ``ATTR_boundary.npy`` per attribute.

InterFaceGAN stores each attribute's boundary as a NumPy array of shape (1, D), float32: the
unit normal of the separating hyperplane in latent space, pointing to the positive side. These
functions convert between such folders and :class:`~tlgan.axes.FeatureAxes`, so axes fitted here
work in InterFaceGAN's ``edit.py`` and its published boundaries can be loaded here.
Files are read with ``allow_pickle=False``: loading never executes code.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.io import atomic_path
from tlgan.registry import unknown_name_message

SUFFIX = "_boundary.npy"
PathLike = Union[str, os.PathLike]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def boundary_path(directory: PathLike, attribute: str) -> Path:
    """Where the boundary of ``attribute`` lives in ``directory``: ``ATTR_boundary.npy``."""
    return Path(directory) / f"{attribute}{SUFFIX}"


def export_boundaries(axes: FeatureAxes, directory: PathLike) -> List[Path]:
    """Write one ``ATTR_boundary.npy`` (1, D) float32 unit vector per attribute into ``directory``.

    Each file is written atomically (temporary name, then rename). Returns the paths in the
    order of ``axes.attributes``. Attribute names must be usable as file names.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise TlganError(f"{directory}: exists and is not a folder; choose a folder for the boundary files")
    bad = [a for a in axes.attributes if not _SAFE_NAME.match(a)]
    if bad:
        raise TlganError(f"attribute name(s) {bad} cannot be file names; use letters, digits, '_', '-', '.', '+'")
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in axes.attributes:
        vector = axes[name].detach().to("cpu", torch.float64)
        vector = (vector / vector.norm()).to(torch.float32).numpy().reshape(1, -1)
        path = boundary_path(directory, name)
        with atomic_path(path) as tmp:
            # Through a file object: np.save given a name would append ".npy" to the temporary name.
            with open(tmp, "wb") as handle:
                np.save(handle, vector, allow_pickle=False)
        paths.append(path)
    return paths


def _attribute_from_path(path: Path) -> str:
    name = path.name
    if name.endswith(SUFFIX):
        return name[: -len(SUFFIX)]
    return path.stem


def _read_boundary(path: Path) -> np.ndarray:
    if not path.is_file():
        raise TlganError(f"{path}: file not found")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise TlganError(f"{path}: not a plain NumPy array file ({exc}); boundary files hold a (1, D) float array") from None
    except (OSError, EOFError) as exc:
        raise TlganError(f"{path}: cannot read it as a .npy file ({exc}); it may be truncated or not a boundary") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise TlganError(f"{path}: holds several arrays (an .npz archive); a boundary file holds one (1, D) array")
    if array.dtype.kind not in "fiu":
        raise TlganError(f"{path}: holds {array.dtype} values; a boundary must be a float array")
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1 or array.size == 0:
        raise TlganError(f"{path}: has shape {array.shape}; an InterFaceGAN boundary has shape (1, D) or (D,)")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise TlganError(f"{path}: holds NaN or infinite values")
    norm = float(np.linalg.norm(array))
    if norm == 0.0:
        raise TlganError(f"{path}: is the zero vector; it defines no direction")
    return array / norm


def import_boundaries(paths: Union[PathLike, Sequence[PathLike]], attributes: Optional[Sequence[str]] = None,
                      space: str = "z", generator: str = "unknown") -> FeatureAxes:
    """Read InterFaceGAN boundaries into FeatureAxes (method "interfacegan").

    ``paths`` is either a folder or a list of ``.npy`` files.

    * Folder: every ``*_boundary.npy`` in it (sorted by name), or, when ``attributes`` is given,
      exactly ``ATTR_boundary.npy`` for each of those names (a missing one is an error that lists
      close matches).
    * List of files: ``attributes`` (optional) renames them, one name per file; by default each
      file's name minus ``_boundary.npy`` (or ``.npy``).

    Each array must have shape (1, D) or (D,), the same D for all, and finite values; it is
    normalised to unit length.
    """
    if isinstance(paths, (str, os.PathLike)) and Path(paths).is_dir():
        directory = Path(paths)
        available = sorted(p for p in directory.glob(f"*{SUFFIX}") if p.is_file())
        if attributes is None:
            files = available
            if not files:
                raise TlganError(f"{directory}: no *{SUFFIX} files in this folder")
            names = [_attribute_from_path(p) for p in files]
        else:
            names = [str(a) for a in attributes]
            known = [_attribute_from_path(p) for p in available]
            for name in names:
                if name not in known:
                    raise TlganError(f"{directory}: no {name}{SUFFIX}; " + unknown_name_message("boundary", name, known))
            files = [boundary_path(directory, name) for name in names]
    else:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        files = [Path(p) for p in paths]
        if not files:
            raise TlganError("no boundary files given")
        if attributes is None:
            names = [_attribute_from_path(p) for p in files]
        else:
            names = [str(a) for a in attributes]
            if len(names) != len(files):
                raise TlganError(f"got {len(names)} attribute names for {len(files)} boundary files; give one per file")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TlganError(f"two boundary files give the same attribute name {dupes}; pass distinct names in attributes")
    vectors = []
    for path in files:
        vector = _read_boundary(path)
        if vectors and len(vector) != len(vectors[0]):
            raise TlganError(f"{path}: has size {len(vector)} but {files[0]} has size {len(vectors[0])}; "
                             f"all boundaries must belong to the same latent space")
        vectors.append(vector)
    stacked = torch.from_numpy(np.stack(vectors)).float()
    return FeatureAxes(stacked, names, space=space, generator=generator, method="interfacegan",
                       info={"source": [str(p) for p in files]})


__all__ = ["boundary_path", "export_boundaries", "import_boundaries"]
