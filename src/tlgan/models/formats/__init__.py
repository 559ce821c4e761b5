"""Checkpoint formats: each module turns one kind of file into a :class:`Checkpoint`
(architecture name, constructor kwargs, state dict in tlgan's key names) and nothing else.

The networks never learn where their weights came from and the pipeline never learns that
formats exist: :func:`load_checkpoint` builds the network with tlgan's own folder-format
table (:mod:`tlgan.models.formats.folder`) and loads the tensors strictly.

Formats, tried in this order (each module has ``matches(probe)`` and ``read(probe)``):

- :mod:`~tlgan.models.formats.nvlabs_pickle`: stylegan2-ada-pytorch / stylegan3 ``.pkl`` (StyleGAN2, StyleGAN3-T/R);
- :mod:`~tlgan.models.formats.rosinality`: rosinality/stylegan2-pytorch ``.pt``;
- :mod:`~tlgan.models.formats.genforce`: InterFaceGAN's PGGAN and StyleGAN ``.pth`` state dicts;
- :mod:`~tlgan.models.formats.tf_pickle`: NVlabs' TensorFlow PGGAN and StyleGAN ``.pkl``.
"""

from __future__ import annotations

import functools
import importlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.io import load_state_dict

FORMAT_MODULES: list[str] = [
    "tlgan.models.formats.nvlabs_pickle",
    "tlgan.models.formats.rosinality",
    "tlgan.models.formats.genforce",
    "tlgan.models.formats.tf_pickle",
]


@dataclass
class Checkpoint:
    """What a format reader found: enough to build a tlgan network and fill it."""

    architecture: str
    kwargs: dict[str, Any]
    state: dict[str, torch.Tensor]
    format: str
    info: dict[str, Any] = field(default_factory=dict)


class Probe:
    """A file being identified; the expensive looks (pickle opcodes, a safe torch.load) happen once."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()

    @functools.cached_property
    def is_zip(self) -> bool:
        return zipfile.is_zipfile(self.path)

    @functools.cached_property
    def is_legacy_torch(self) -> bool:
        """A ``torch.save`` file in the pre-1.6 format (a run of pickles starting with torch's magic number)."""
        import pickle

        magic = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)
        with open(self.path, "rb") as f:
            return f.read(len(magic)) == magic

    @functools.cached_property
    def is_torchscript(self) -> bool:
        if not self.is_zip:
            return False
        with zipfile.ZipFile(self.path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())

    @functools.cached_property
    def pickle_globals(self) -> list[str]:
        from tlgan.models.formats.unpickler import first_globals

        return [] if self.is_zip or self.is_legacy_torch else first_globals(self.path)

    @functools.cached_property
    def torch_object(self) -> Any:
        """``torch.load(weights_only=True)`` of the file (None if it is no torch file)."""
        import argparse

        if not (self.is_zip or self.is_legacy_torch):
            return None
        try:
            # Training checkpoints keep their argparse options; a Namespace only holds values.
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for bad or unsafe archives
            raise TlganError(
                f"{self.path}: not a loadable torch checkpoint ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]})"
            ) from None


def format_modules():
    return [importlib.import_module(name) for name in FORMAT_MODULES]


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Identify ``path``'s format and read it (TlganError naming the file and the known formats if none fits)."""
    probe = Probe(path)
    if not probe.path.is_file():
        raise TlganError(f"{probe.path}: file not found")
    for module in format_modules():
        if module.matches(probe):
            return module.read(probe)
    names = ", ".join(m.DESCRIPTION for m in format_modules())
    raise TlganError(f"{probe.path}: not a checkpoint format tlgan knows ({names})")


CHECKPOINT_SUFFIXES = (".pkl", ".pt", ".pth")


def is_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` should be read by a format module: a ``.pkl``, or a ``.pt``/``.pth`` torch.save
    file (a zip archive that is not TorchScript, or the pre-1.6 format) (a cheap look; the file is not read)."""
    probe = Probe(path)
    if not probe.path.is_file() or probe.suffix not in CHECKPOINT_SUFFIXES:
        return False
    return probe.suffix == ".pkl" or (probe.is_zip and not probe.is_torchscript) or probe.is_legacy_torch


def build_checkpoint(checkpoint: Checkpoint, source: str) -> torch.nn.Module:
    """The tlgan network a :class:`Checkpoint` describes, with its tensors loaded strictly (eval mode)."""
    from tlgan.models.formats.folder import build

    where = f"{source} ({checkpoint.format})"
    module = build(checkpoint.architecture, checkpoint.kwargs, where)
    load_state_dict(module, checkpoint.state, f"{where}: the tensors")
    return module.eval()


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The tlgan network stored in ``path`` (any known format), weights loaded strictly, eval mode."""
    module = build_checkpoint(read_checkpoint(path), str(path))
    module.name = Path(path).stem
    return module.to(device)


def convert(path: str | os.PathLike, out: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write the network in ``path`` as a tlgan folder (``model.json`` + ``model.safetensors``) at ``out``."""
    from tlgan.models.formats.folder import save_pretrained

    checkpoint = read_checkpoint(path)
    module = build_checkpoint(checkpoint, str(path))
    module.name = Path(path).stem
    info = {"converted_from": {"file": Path(path).name, "format": checkpoint.format, **checkpoint.info}}
    return save_pretrained(module, out, extra={**info, **(extra or {})})
