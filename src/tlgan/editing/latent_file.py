"""A single saved latent (from inversion or picked in the studio) with its space: safetensors + metadata."""

from __future__ import annotations

import os
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.io import load_tensors, save_tensors

FORMAT = "tlgan.latent/1"


def save_latent(
    path: str | os.PathLike,
    latent: torch.Tensor,
    *,
    space: str = "z",
    generator: str = "unknown",
    **extra: Any,
) -> None:
    """Write one latent with its space and generator name: (D,) for z and w, (num_ws, w_dim) for wp."""
    latent = torch.as_tensor(latent, dtype=torch.float32).detach().cpu()
    if space == "wp":
        if latent.ndim == 3 and latent.shape[0] == 1:
            latent = latent[0]
        if latent.ndim != 2:
            raise TlganError(f"a wp latent is (num_ws, w_dim); got shape {tuple(latent.shape)}")
    else:
        latent = latent.reshape(-1)
    save_tensors(
        path, {"latent": latent}, {"format": FORMAT, "space": space, "generator": generator, **extra}
    )


def load_latent(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read a latent written by :func:`save_latent`: returns (latent float32, metadata).

    The latent is (D,) for spaces z and w and (num_ws, w_dim) for wp; ``metadata["space"]`` says which.
    """
    tensors, meta = load_tensors(path)
    if "latent" not in tensors:
        raise TlganError(
            f"{path}: not a tlgan latent file (no 'latent' tensor); make one with `tlgan invert`"
        )
    latent = tensors["latent"].float()
    latent = latent if meta.get("space") == "wp" else latent.reshape(-1)
    if not torch.isfinite(latent).all():
        raise TlganError(f"{path}: the latent holds NaN or infinite values")
    return latent, meta
