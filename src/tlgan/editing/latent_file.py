"""A single saved latent (from inversion or picked in the studio): safetensors + metadata."""
from __future__ import annotations

import os
from typing import Any, Dict, Tuple

import torch

from tlgan.errors import TlganError
from tlgan.io import load_tensors, save_tensors

FORMAT = "tlgan.latent/1"


def save_latent(path: str | os.PathLike, latent: torch.Tensor, *, space: str = "z", generator: str = "unknown",
                **extra: Any) -> None:
    """Write one latent vector (D,) with its space and generator name."""
    latent = torch.as_tensor(latent, dtype=torch.float32).reshape(-1)
    save_tensors(path, {"latent": latent}, {"format": FORMAT, "space": space, "generator": generator, **extra})


def load_latent(path: str | os.PathLike) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Read a latent written by :func:`save_latent`: returns ((D,) float32, metadata)."""
    tensors, meta = load_tensors(path)
    if "latent" not in tensors:
        raise TlganError(f"{path}: not a tlgan latent file (no 'latent' tensor); make one with `tlgan invert`")
    latent = tensors["latent"].float().reshape(-1)
    if not torch.isfinite(latent).all():
        raise TlganError(f"{path}: the latent holds NaN or infinite values")
    return latent, meta
