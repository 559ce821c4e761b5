"""InterFaceGAN boundary files: one ``.npy`` per attribute, the space and model in the file name.

InterFaceGAN stores each attribute's boundary as a NumPy array of shape (1, D), float32: the
unit normal of the separating hyperplane in latent space, pointing to the positive side. These
functions convert between such folders and :class:`~tlgan.axes.FeatureAxes`, so axes fitted here
work in InterFaceGAN's ``edit.py`` and its published boundaries can be loaded here.
Files are read with ``allow_pickle=False``: loading never executes code.

File names (:func:`parse_boundary_name`) follow InterFaceGAN's published ones:
``[MODEL_DATASET_]ATTR[_c_COND...][_w]_boundary.npy``, e.g. ``stylegan_ffhq_smile_w_boundary.npy``
(the ``smile`` axis in ``w``), ``pggan_celebahq_age_c_gender_boundary.npy`` (``age`` with
``gender`` projected out, in ``z``). A ``w`` boundary also edits ``wp`` latents, per layer.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.io import atomic_path
from tlgan.registry import unknown_name_message

SUFFIX = "_boundary.npy"
PathLike = str | os.PathLike

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


# The model families whose published boundary names start with "FAMILY_DATASET_".
MODEL_PREFIXES = ("pggan", "stylegan", "stylegan2", "stylegan3")
SPACE_SUFFIXES = {"_wp": "wp", "_w": "w"}


@dataclass(frozen=True)
class BoundaryName:
    """What an InterFaceGAN boundary file name says: attribute, space, conditions, model prefix."""

    attribute: str
    space: str = "z"
    conditions: tuple[str, ...] = ()
    prefix: str = ""

    @property
    def axis_name(self) -> str:
        """The axis name tlgan gives it: the attribute, plus ``_c_COND`` for a conditional boundary."""
        return self.attribute + ("_c_" + "_".join(self.conditions) if self.conditions else "")


def parse_boundary_name(filename: str) -> BoundaryName:
    """``stylegan_ffhq_age_c_gender_w_boundary.npy`` -> BoundaryName("age", "w", ("gender",), "stylegan_ffhq")."""
    stem = Path(filename).name
    stem = stem[: -len(SUFFIX)] if stem.endswith(SUFFIX) else Path(stem).stem
    space = "z"
    for suffix, name in SPACE_SUFFIXES.items():
        if stem.endswith(suffix) and len(stem) > len(suffix):
            stem, space = stem[: -len(suffix)], name
            break
    prefix = ""
    parts = stem.split("_")
    if len(parts) > 2 and parts[0] in MODEL_PREFIXES:
        prefix, stem = "_".join(parts[:2]), "_".join(parts[2:])
    attribute, _, condition = stem.partition("_c_")
    conditions = tuple(c for c in condition.split("_") if c) if condition else ()
    return BoundaryName(attribute or stem, space, conditions, prefix)


def boundary_filename(attribute: str, space: str = "z", prefix: str = "") -> str:
    """The InterFaceGAN-style name of a boundary: ``[PREFIX_]ATTR[_w]_boundary.npy``."""
    tag = "" if space == "z" else f"_{space}"
    return f"{prefix + '_' if prefix else ''}{attribute}{tag}{SUFFIX}"


def boundary_path(directory: PathLike, attribute: str, space: str = "z", prefix: str = "") -> Path:
    """Where the boundary of ``attribute`` in ``space`` lives in ``directory`` (see :func:`boundary_filename`)."""
    return Path(directory) / boundary_filename(attribute, space, prefix)


def export_boundaries(axes: FeatureAxes, directory: PathLike, prefix: str = "") -> list[Path]:
    """Write one (1, D) float32 unit vector per attribute into ``directory``, named as InterFaceGAN names them.

    ``ATTR_boundary.npy`` for z axes, ``ATTR_w_boundary.npy`` for w axes; ``prefix`` (e.g.
    ``"stylegan_ffhq"``) goes in front. Each file is written atomically (temporary name, then
    rename). Returns the paths in the order of ``axes.attributes``. Attribute names must be
    usable as file names.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise TlganError(f"{directory}: exists and is not a folder; choose a folder for the boundary files")
    bad = [a for a in axes.attributes if not _SAFE_NAME.match(a)]
    if bad:
        raise TlganError(
            f"attribute name(s) {bad} cannot be file names; use letters, digits, '_', '-', '.', '+'"
        )
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in axes.attributes:
        vector = axes[name].detach().to("cpu", torch.float64)
        vector = (vector / vector.norm()).to(torch.float32).numpy().reshape(1, -1)
        path = boundary_path(directory, name, axes.space, prefix)
        with atomic_path(path) as tmp:
            # Through a file object: np.save given a name would append ".npy" to the temporary name.
            with open(tmp, "wb") as handle:
                np.save(handle, vector, allow_pickle=False)
        paths.append(path)
    return paths


def _read_boundary(path: Path) -> np.ndarray:
    if not path.is_file():
        raise TlganError(f"{path}: file not found")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise TlganError(
            f"{path}: not a plain NumPy array file ({exc}); boundary files hold a (1, D) float array"
        ) from None
    except (OSError, EOFError) as exc:
        raise TlganError(
            f"{path}: cannot read it as a .npy file ({exc}); it may be truncated or not a boundary"
        ) from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise TlganError(
            f"{path}: holds several arrays (an .npz archive); a boundary file holds one (1, D) array"
        )
    if array.dtype.kind not in "fiu":
        raise TlganError(f"{path}: holds {array.dtype} values; a boundary must be a float array")
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1 or array.size == 0:
        raise TlganError(
            f"{path}: has shape {array.shape}; an InterFaceGAN boundary has shape (1, D) or (D,)"
        )
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise TlganError(f"{path}: holds NaN or infinite values")
    norm = float(np.linalg.norm(array))
    if norm == 0.0:
        raise TlganError(f"{path}: is the zero vector; it defines no direction")
    return array / norm


def import_boundaries(
    paths: PathLike | Sequence[PathLike],
    attributes: Sequence[str] | None = None,
    space: str | None = None,
    generator: str = "unknown",
) -> FeatureAxes:
    """Read InterFaceGAN boundaries into FeatureAxes (method "interfacegan").

    ``paths`` is either a folder or a list of ``.npy`` files. Names come from the file names
    (:func:`parse_boundary_name`: ``stylegan_ffhq_smile_w_boundary.npy`` is ``smile`` in ``w``;
    a conditional ``age_c_gender`` keeps that name), and so does the space unless ``space``
    is given; all files must be of one space.

    * Folder: every ``*_boundary.npy`` in it (sorted by name), or, when ``attributes`` is given,
      exactly the boundary of each of those names (a missing one is an error that lists close
      matches).
    * List of files: ``attributes`` (optional) renames them, one name per file.

    Each array must have shape (1, D) or (D,), the same D for all, and finite values; it is
    normalised to unit length.
    """
    if isinstance(paths, (str, os.PathLike)) and Path(paths).is_dir():
        directory = Path(paths)
        available = {
            parse_boundary_name(p.name).axis_name: p
            for p in sorted(directory.glob(f"*{SUFFIX}"))
            if p.is_file()
        }
        if attributes is None:
            if not available:
                raise TlganError(f"{directory}: no *{SUFFIX} files in this folder")
            names, files = list(available), list(available.values())
        else:
            names = [str(a) for a in attributes]
            for name in names:
                if name not in available:
                    raise TlganError(
                        f"{directory}: no boundary for {name!r}; "
                        + unknown_name_message("boundary", name, list(available))
                    )
            files = [available[name] for name in names]
    else:
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        files = [Path(p) for p in paths]
        if not files:
            raise TlganError("no boundary files given")
        if attributes is None:
            names = [parse_boundary_name(p.name).axis_name for p in files]
        else:
            names = [str(a) for a in attributes]
            if len(names) != len(files):
                raise TlganError(
                    f"got {len(names)} attribute names for {len(files)} boundary files; give one per file"
                )
    parsed = [parse_boundary_name(p.name) for p in files]
    spaces = sorted({b.space for b in parsed})
    if space is None:
        if len(spaces) > 1:
            raise TlganError(
                f"the boundary files are of several spaces ({', '.join(spaces)}, from their names); "
                f"import one space at a time"
            )
        space = spaces[0]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise TlganError(
            f"two boundary files give the same attribute name {dupes}; pass distinct names in attributes"
        )
    vectors = []
    for path in files:
        vector = _read_boundary(path)
        if vectors and len(vector) != len(vectors[0]):
            raise TlganError(
                f"{path}: has size {len(vector)} but {files[0]} has size {len(vectors[0])}; "
                f"all boundaries must belong to the same latent space"
            )
        vectors.append(vector)
    stacked = torch.from_numpy(np.stack(vectors)).float()
    conditions = {n: list(b.conditions) for n, b in zip(names, parsed, strict=True) if b.conditions}
    info = {"source": [str(p) for p in files]}
    if conditions:
        info["conditions"] = conditions
    return FeatureAxes(stacked, names, space=space, generator=generator, method="interfacegan", info=info)


__all__ = [
    "BoundaryName",
    "parse_boundary_name",
    "boundary_filename",
    "boundary_path",
    "export_boundaries",
    "import_boundaries",
]
