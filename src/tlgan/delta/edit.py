"""Editing with a learned edit: the counterparts of :func:`tlgan.editing.edit.edit_latents`
and :func:`tlgan.editing.edit.interpolate` for a :class:`~tlgan.delta.model.DeltaModel`.

``alpha`` counts training steps of change (``model.info["unit"]`` factor units each, e.g.
8.3 degrees of yaw): ``alpha = 1.5`` is one and a half steps; negative values reverse the
change. Each result is one jump ``latent + D(latent, Δ(alpha))``, not a chain of steps, with
``Δ(alpha)`` the code fitted for that many steps (:meth:`~tlgan.delta.model.DeltaModel.alpha_codes`;
``alpha`` times the one-step code for model folders from before the step table, or with an
explicit ``delta``).
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


def read_steps(model: DeltaModel, train_latents: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Which step of the training sequences each latent is nearest to, read in the model's
    subspace: (N,) step indices.

    ``train_latents`` (K, n, D) are the sequences as the model was trained on them and
    ``latents`` (N, D) the latents to place. Each step's centroid is the mean over the
    sequences of their coordinates there, and distances are taken in the metric of how the
    sequences spread around those centroids (faces differ from each other along some of the
    directions the path bends into; those count less). An edit that follows a curved path
    must know where on it the face starts, and a new face's latent does not say so by itself.
    """
    x = torch.as_tensor(train_latents).float()
    k, n = x.shape[:2]
    coords = model._norm(x.reshape(k * n, -1)).reshape(k, n, -1).double()
    centroids = coords.mean(0)  # (n, r)
    spread = (coords - centroids).reshape(k * n, -1)
    cov = spread.T @ spread / max(k * n - n, 1)
    cov = cov + 1e-6 * float(cov.diagonal().mean().clamp_min(1e-12)) * torch.eye(len(cov), dtype=cov.dtype)
    whiten = torch.linalg.cholesky(torch.linalg.inv(cov))  # |(c - m) @ whiten|^2 = Mahalanobis
    points = model._norm(torch.as_tensor(latents).float().reshape(-1, model.dim)).double()
    return torch.cdist((points @ whiten)[None], (centroids @ whiten)[None])[0].argmin(1)


__all__ = ["delta_edit", "delta_walk", "read_steps"]
