"""Editing with a learned edit: the counterparts of :func:`tlgan.editing.edit.edit_latents`
and :func:`tlgan.editing.edit.interpolate` for a :class:`~tlgan.delta.model.DeltaModel`.

``alpha`` counts training steps of change (``model.info["unit"]`` factor units each, e.g.
8.3 degrees of yaw): ``alpha = 1.5`` is one and a half steps; negative values reverse the
change. Each result is one jump ``latent + D(latent, alpha * Δ)``, not a chain of steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tlgan.delta.model import DeltaModel
from tlgan.errors import TlganError, finite_number


def delta_edit(
    latents, model: DeltaModel, alpha: float = 1.0, delta: torch.Tensor | None = None
) -> torch.Tensor:
    """Edit ``latents`` (N, *latent shape) or (*latent shape,) by ``alpha`` times the change ``delta``
    (default: the model's one-step reference change); returns the same shape and dtype."""
    latents = torch.as_tensor(latents)
    out = model.edit(latents, finite_number(alpha, "alpha", "steps"), delta)
    return out.to(latents.dtype if latents.is_floating_point() else torch.float32)


def delta_walk(
    latent, model: DeltaModel, alphas: Sequence[float], delta: torch.Tensor | None = None
) -> torch.Tensor:
    """The edits of one latent (*latent shape,) for each alpha: (S, *latent shape), for grids and GIFs."""
    latent = torch.as_tensor(latent)
    flat, lead = model.flatten(latent, "latent")
    if len(flat) != 1:
        raise TlganError(f"delta_walk takes one latent; got {len(flat)} (use delta_edit for a batch)")
    alphas = [finite_number(a, "alpha", "steps") for a in alphas]
    if not alphas:
        raise TlganError("delta_walk needs at least one alpha")
    return torch.cat([model.edit(flat, a, delta) for a in alphas]).reshape(len(alphas), *model.latent_shape)


__all__ = ["delta_edit", "delta_walk"]
