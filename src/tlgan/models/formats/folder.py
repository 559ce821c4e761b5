"""tlgan's own model folder: ``model.json`` (architecture, constructor kwargs, name, extras)
beside ``model.safetensors`` (the state dict). Every other format converts into this one.

The architectures are a table of import paths, resolved when a folder is loaded, so this
module imports no network and every network module may import it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlgan.errors import TlganError
from tlgan.io import load_state, read_json, save_module
from tlgan.registry import unknown_name_message

ARCHITECTURES: dict[str, str] = {
    "DCGANGenerator": "tlgan.models.networks:DCGANGenerator",
    "AttributeClassifierNet": "tlgan.models.networks:AttributeClassifierNet",
    "StyleGAN2Generator": "tlgan.models.stylegan2:StyleGAN2Generator",
    "StyleGAN3Generator": "tlgan.models.stylegan3:StyleGAN3Generator",
    "PGGANGenerator": "tlgan.models.pggan:PGGANGenerator",
    "StyleGANGenerator": "tlgan.models.stylegan1:StyleGANGenerator",
}
"""Architecture name (as written in model.json) -> ``module:Class`` that builds it."""

_RESERVED = ("architecture", "kwargs", "name")


def architecture_class(name: str) -> type:
    """The class registered as ``name`` in :data:`ARCHITECTURES` (TlganError with close matches if unknown)."""
    if name not in ARCHITECTURES:
        raise TlganError(unknown_name_message("architecture", str(name), list(ARCHITECTURES)))
    module_name, _, class_name = ARCHITECTURES[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def build(architecture: str, kwargs: dict[str, Any], where: str = "config") -> nn.Module:
    """An untrained ``architecture`` built from its constructor ``kwargs``; ``where`` names the source in errors."""
    if not isinstance(kwargs, dict):
        raise TlganError(f'{where}: "kwargs" must be an object of constructor arguments')
    cls = architecture_class(architecture)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise TlganError(f'{where}: "kwargs" do not fit {architecture} ({exc})') from None


def save_pretrained(
    module: nn.Module, directory: str | os.PathLike, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` for ``module`` into ``directory``.

    The JSON holds {"architecture": class name, "kwargs": constructor arguments, "name":
    module.name, **extra} (``extra`` e.g. training settings and metrics; JSON-able).
    """
    arch = type(module).__name__
    if arch not in ARCHITECTURES or architecture_class(arch) is not type(module):
        raise TlganError(f"cannot save a {arch}: save_pretrained knows {', '.join(ARCHITECTURES)}")
    extra = dict(extra or {})
    clash = [k for k in _RESERVED if k in extra]
    if clash:
        raise TlganError(f"extra may not set {', '.join(clash)}: save_pretrained writes those itself")
    config = {"architecture": arch, "kwargs": dict(module.config_kwargs), "name": str(module.name), **extra}
    directory = Path(directory)
    save_module(directory, module, config)
    return directory


def load_pretrained(directory: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a network from ``directory/model.json`` and load ``model.safetensors`` strictly; eval mode."""
    directory = Path(directory)
    config_path = directory / "model.json"
    config = read_json(config_path)
    if not isinstance(config, dict) or any(k not in config for k in _RESERVED):
        raise TlganError(
            f"{config_path}: needs the keys {', '.join(_RESERVED)}; this is not a tlgan model config"
        )
    arch = config["architecture"]
    if arch not in ARCHITECTURES:
        raise TlganError(
            f"{config_path}: " + unknown_name_message("architecture", str(arch), list(ARCHITECTURES))
        )
    module = build(arch, config["kwargs"], str(config_path))
    module.name = str(config["name"])
    load_state(module, directory / "model.safetensors")
    return module.to(device).eval()
