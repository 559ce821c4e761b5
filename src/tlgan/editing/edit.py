"""Editing latents along feature axes: the arithmetic behind every slider.

``edit_latents`` moves latents by given amounts along attribute axes, optionally holding other
attributes fixed; ``interpolate`` lays out the points of a straight walk for grids and GIFs.
Amounts and steps are distances in latent units along unit directions (a standard-normal z has
unit variance along any unit direction, so an amount of 2 is two standard deviations).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from tlgan.axes.disentangle import project_out
from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError


def _latent_tensor(latent, name: str = "latent") -> torch.Tensor:
    if not isinstance(latent, torch.Tensor):
        latent = torch.as_tensor(np.asarray(latent, dtype=np.float32))
    if not latent.is_floating_point():
        latent = latent.float()
    return latent


def edit_latents(latents, axes: FeatureAxes, amounts: Mapping[str, float], locks: Sequence[str] = ()) -> torch.Tensor:
    """Move ``latents`` (N, D) or (D,) along attribute axes; returns the same shape and dtype.

    ``z' = z + sum_a amounts[a] * u_a`` where ``u_a`` is axis ``a`` made orthogonal to every
    locked axis other than ``a`` itself (and renormalised; without locks ``u_a`` is the axis).
    So with no locks a single move changes the projection on axis ``a`` by exactly the amount,
    and with locks the projections on the locked axes do not change at all (moving a locked
    attribute on purpose keeps the *other* locked ones fixed).

    Raises TlganError for a latent size that does not match ``axes.dim``, unknown attribute
    names (with close matches), and NaN or infinite amounts.
    """
    latents = _latent_tensor(latents)
    if latents.ndim not in (1, 2) or latents.shape[-1] != axes.dim:
        raise TlganError(f"latents of shape {tuple(latents.shape)} do not fit these axes: the axes have size {axes.dim} "
                         f"(space {axes.space!r}), the latents size {latents.shape[-1] if latents.ndim else 0}; "
                         f"use axes fitted for this generator and space")
    if isinstance(locks, str):
        locks = [locks]
    locks = list(dict.fromkeys(str(name) for name in locks))
    lock_index = {name: axes.index(name) for name in locks}  # raises with close matches
    moves = {}
    for name, amount in dict(amounts).items():
        index = axes.index(str(name))
        try:
            amount = float(amount)
        except (TypeError, ValueError):
            raise TlganError(f"amount for {name!r} must be a number, not {amount!r}") from None
        if not math.isfinite(amount):
            raise TlganError(f"amount for {name!r} is {amount}; give a finite number of latent units")
        if amount != 0.0:
            moves[str(name)] = (index, amount)
    delta = torch.zeros(axes.dim, dtype=torch.float64)
    for name, (index, amount) in moves.items():
        others = [lock_index[lock] for lock in locks if lock != name]
        direction = axes.vectors[index].to(torch.float64)
        if others:
            try:
                direction = project_out(direction, axes.vectors[others])
            except TlganError as exc:
                raise TlganError(f"cannot move {name!r} with {', '.join(repr(l) for l in locks if l != name)} locked: "
                                 f"{exc}") from None
        else:
            direction = direction / direction.norm()
        delta += amount * direction
    return latents + delta.to(device=latents.device, dtype=latents.dtype)


def interpolate(latent, direction, steps: Sequence[float]) -> torch.Tensor:
    """Points ``latent + step * direction`` for each step: (S, D) from ``latent`` (D,), ``direction`` (D,).

    ``direction`` is used as given; pass a unit axis (``axes["Smiling"]``) for steps in latent units.
    Returns ``latent``'s dtype.
    """
    latent = _latent_tensor(latent)
    direction = _latent_tensor(direction, "direction")
    if latent.ndim == 2 and latent.shape[0] == 1:
        latent = latent[0]
    if latent.ndim != 1 or direction.reshape(-1).shape != latent.shape:
        raise TlganError(f"interpolate needs a latent (D,) and a direction of the same size; got shapes "
                         f"{tuple(latent.shape)} and {tuple(direction.shape)}")
    direction = direction.reshape(-1)
    steps_t = torch.as_tensor([float(s) for s in steps], dtype=torch.float64)
    if steps_t.numel() == 0:
        raise TlganError("interpolate needs at least one step")
    if not torch.isfinite(steps_t).all():
        raise TlganError(f"steps must be finite numbers; got {list(steps)}")
    if not (torch.isfinite(latent).all() and torch.isfinite(direction).all()):
        raise TlganError("latent or direction holds NaN or infinite values")
    points = latent.to(torch.float64)[None] + steps_t[:, None] * direction.to(torch.float64)[None]
    return points.to(device=latent.device, dtype=latent.dtype)


__all__ = ["edit_latents", "interpolate"]
