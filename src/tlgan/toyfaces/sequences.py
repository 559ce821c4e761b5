"""Sequences of toyfaces in which one factor changes and everything else stays fixed.

Identity k is latent k of ``seed`` (the same faces ``toyfaces-render`` draws); its factors
come from :func:`tlgan.toyfaces.world.factors`, then one factor is overwritten with the same
values for every identity and the faces are rendered. So the renderer also knows the true
result of any such change for any face: the image of that identity with the factor set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tlgan.errors import TlganError
from tlgan.models.base import latent_rng_normal
from tlgan.registry import unknown_name_message
from tlgan.toyfaces import world
from tlgan.toyfaces.render import render

#: Short names accepted for factors.
ALIASES: dict[str, str] = {"light": "light_angle", "nose": "nose_size", "mouth": "mouth_opening"}

#: (first, last) value of a sequence by default, inside the range the world produces.
DEFAULT_RANGES: dict[str, tuple[float, float]] = {
    "yaw": (-25.0, 25.0),
    "light_angle": (-120.0, 120.0),
    "age": (20.0, 60.0),
    "nose_size": (1.05, 1.75),
    "background_hue": (0.0, 0.8),
    "background_brightness": (0.4, 0.8),
    "scale": (0.93, 1.07),
    "shift_x": (-2.5, 2.5),
    "shift_y": (-2.5, 2.5),
}
UNIT_RANGE = (0.05, 0.95)  # attribute amounts (0..1)


def factor_name(name: str) -> str:
    """The world's name for ``name`` (``light`` -> ``light_angle``); TlganError with close matches if unknown."""
    key = ALIASES.get(str(name), str(name))
    if key not in world.FACTOR_NAMES:
        raise TlganError(
            unknown_name_message("toyfaces factor", str(name), list(world.FACTOR_NAMES) + list(ALIASES))
        )
    return key


def default_values(factor: str, steps: int) -> np.ndarray:
    """``steps`` evenly spaced values of ``factor`` over its default range, (steps,) float64."""
    factor = factor_name(factor)
    if int(steps) < 2:
        raise TlganError(f"a sequence needs at least 2 steps, not {steps}")
    lo, hi = DEFAULT_RANGES.get(factor, UNIT_RANGE)
    return np.linspace(lo, hi, int(steps))


@dataclass
class ToyfacesSequences:
    """``images`` (K, n, 3, R, R) in [-1, 1]; ``values`` (n,); ``latents`` (K, 512) the
    identities' world latents; ``factors`` each (K, n) the drawn factors."""

    factor: str
    values: np.ndarray
    images: torch.Tensor
    latents: torch.Tensor
    factors: dict[str, torch.Tensor]
    seed: int
    indices: np.ndarray


def identity_latents(identities: int, seed: int = 0, start: int = 0) -> torch.Tensor:
    """World latents (K, 512) of identities start..start+K-1 of ``seed``."""
    if int(identities) < 1:
        raise TlganError(f"identities must be at least 1, not {identities}")
    return latent_rng_normal(int(seed), np.arange(int(start), int(start) + int(identities)), world.Z_DIM)


def render_with(
    latents: torch.Tensor, factor: str, values: torch.Tensor, resolution: int = 64
) -> torch.Tensor:
    """Faces of ``latents`` (N, 512) with ``factor`` set to ``values`` (N,): (N, 3, R, R)."""
    f = world.factors(latents)
    f[factor_name(factor)] = torch.as_tensor(values, dtype=f["yaw"].dtype).reshape(-1)
    return render(f, resolution=resolution)


def factor_sequences(
    factor: str,
    identities: int,
    steps: int,
    *,
    seed: int = 0,
    start: int = 0,
    values: Sequence[float] | None = None,
    resolution: int = 64,
) -> ToyfacesSequences:
    """Render K = ``identities`` sequences of n = ``steps`` faces in which only ``factor`` changes.

    ``values`` (n,) overrides the default evenly spaced range (:data:`DEFAULT_RANGES`).
    """
    factor = factor_name(factor)
    vals = default_values(factor, steps) if values is None else np.asarray([float(v) for v in values])
    if values is not None and len(vals) != int(steps):
        raise TlganError(f"{len(vals)} values given for {steps} steps; give one value per step")
    if len(vals) < 2:
        raise TlganError(f"a sequence needs at least 2 steps, not {len(vals)}")
    z = identity_latents(identities, seed=seed, start=start)
    k, n = len(z), len(vals)
    zz = z.repeat_interleave(n, dim=0)
    f = world.factors(zz)
    f[factor] = torch.as_tensor(vals, dtype=f[factor].dtype).repeat(k)
    with torch.no_grad():
        images = render(f, resolution=resolution)
    return ToyfacesSequences(
        factor=factor,
        values=vals,
        images=images.reshape(k, n, *images.shape[1:]),
        latents=z,
        factors={key: v.reshape(k, n) for key, v in f.items()},
        seed=int(seed),
        indices=np.arange(int(start), int(start) + k),
    )


__all__ = [
    "ALIASES",
    "DEFAULT_RANGES",
    "factor_name",
    "default_values",
    "ToyfacesSequences",
    "identity_latents",
    "render_with",
    "factor_sequences",
]
