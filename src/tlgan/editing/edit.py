"""Editing latents along feature axes: the arithmetic behind every slider.

``edit_latents`` moves latents by given amounts along attribute axes, optionally holding other
attributes fixed; ``interpolate`` lays out the points of a straight walk for grids and GIFs.
Amounts and steps are distances in latent units along unit directions (a standard-normal z has
unit variance along any unit direction, so an amount of 2 is two standard deviations).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from tlgan.axes.disentangle import project_out
from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError, finite_number
from tlgan.models.base import Generator


def _latent_tensor(latent, name: str = "latent") -> torch.Tensor:
    if not isinstance(latent, torch.Tensor):
        latent = torch.as_tensor(np.asarray(latent, dtype=np.float32))
    if not latent.is_floating_point():
        latent = latent.float()
    return latent


def edit_latents(
    latents,
    axes: FeatureAxes,
    amounts: Mapping[str, float],
    locks: Sequence[str] = (),
    *,
    space: str | None = None,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Move ``latents`` along attribute axes; returns the same shape and dtype.

    ``z' = z + sum_a amounts[a] * u_a`` where ``u_a`` is axis ``a`` made orthogonal to every
    locked axis other than ``a`` itself (and renormalised; without locks ``u_a`` is the axis).
    So with no locks a single move changes the projection on axis ``a`` by exactly the amount,
    and with locks the projections on the locked axes do not change at all (moving a locked
    attribute on purpose keeps the *other* locked ones fixed).

    ``space`` is the latents' space (default: the axes'). Latents of the axes' space are (N, D)
    or (D,). Axes fitted in ``w`` also move ``wp`` latents, (N, num_ws, D) or (num_ws, D): the
    same move is added to the w of each layer in ``layers`` (default every layer), so
    ``layers=range(0, 6)`` edits the coarse layers only and leaves the others' w unchanged.

    Raises TlganError for latents that do not fit the axes (naming the space and shape),
    unknown attribute names (with close matches), NaN or infinite amounts, and layers outside
    the latent.
    """
    latents = _latent_tensor(latents)
    space = axes.space if space is None else str(space)
    if space == axes.space:
        if layers is not None:
            raise TlganError(f"layers apply to wp latents edited with w axes; these latents are in {space!r}")
        if latents.ndim not in (1, 2) or latents.shape[-1] != axes.dim:
            raise TlganError(
                f"latents of shape {tuple(latents.shape)} do not fit these axes: the axes have size "
                f"{axes.dim} (space {axes.space!r}), the latents size "
                f"{latents.shape[-1] if latents.ndim else 0}; use axes fitted for this generator and space"
            )
    elif space == "wp" and axes.space == "w":
        if latents.ndim not in (2, 3) or latents.shape[-1] != axes.dim:
            raise TlganError(
                f"wp latents must be (num_ws, {axes.dim}) or (N, num_ws, {axes.dim}) for these w axes; "
                f"got shape {tuple(latents.shape)}"
            )
    else:
        raise TlganError(
            f"axes fitted in {axes.space!r} cannot move latents of space {space!r}; fit axes in "
            f"{space if space != 'wp' else 'w'!r} (`tlgan sample --space ...` then `tlgan fit`)"
        )
    delta = edit_direction(axes, amounts, locks).to(device=latents.device, dtype=latents.dtype)
    if space != "wp" or axes.space != "w":
        return latents + delta
    num_ws = latents.shape[-2]
    chosen = list(range(num_ws)) if layers is None else [int(k) for k in layers]
    bad = [k for k in chosen if not 0 <= k < num_ws]
    if bad:
        raise TlganError(f"layer(s) {bad} are outside this wp latent, which has layers 0-{num_ws - 1}")
    mask = torch.zeros(num_ws, 1, dtype=latents.dtype, device=latents.device)
    mask[chosen] = 1.0
    return latents + mask * delta


def edit_direction(
    axes: FeatureAxes, amounts: Mapping[str, float], locks: Sequence[str] = ()
) -> torch.Tensor:
    """The move ``sum_a amounts[a] * u_a`` of :func:`edit_latents`, (D,) float64."""
    if isinstance(locks, str):
        locks = [locks]
    locks = list(dict.fromkeys(str(name) for name in locks))
    lock_index = {name: axes.index(name) for name in locks}  # raises with close matches
    moves = {}
    for name, amount in dict(amounts).items():
        index = axes.index(str(name))
        amount = finite_number(amount, f"amount for {name!r}", "latent units")
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
                raise TlganError(
                    f"cannot move {name!r} with {', '.join(repr(lock) for lock in locks if lock != name)} locked: "
                    f"{exc}"
                ) from None
        else:
            direction = direction / direction.norm()
        delta += amount * direction
    return delta


def edit_latents_grid(
    latent: torch.Tensor,
    axes: FeatureAxes,
    attributes: Sequence[str],
    steps: Sequence[float],
    locks: Sequence[str] = (),
    *,
    space: str | None = None,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Latents for a grid: one row per attribute, one column per step. Returns (R*C, *latent.shape)."""
    rows = []
    for name in attributes:
        for step in steps:
            rows.append(edit_latents(latent, axes, {name: float(step)}, locks, space=space, layers=layers))
    return torch.stack(rows)


def check_axes_for(axes: FeatureAxes, generator: Generator, generator_spec: str | None = None) -> None:
    """Axes must come from the same generator (by name) and have its latent size."""
    names = {generator.name, generator_spec} - {None}
    if axes.generator not in names and axes.generator != "unknown":
        raise TlganError(
            f"these axes were fitted for generator {axes.generator!r}, not {generator_spec or generator.name!r}; "
            f"fit axes for this generator with `tlgan sample` + `tlgan fit`"
        )
    dim = generator.latent_dim(axes.space)
    if axes.dim != dim:
        raise TlganError(
            f"axes have size {axes.dim} but generator {generator.name!r} space {axes.space!r} has size {dim}"
        )


@torch.inference_mode()
def draw_latents(
    generator: Generator, latents: torch.Tensor, space: str = "z", batch_size: int = 64
) -> torch.Tensor:
    """The generator's images of ``latents``: (N, 3, R, R) float32 in [-1, 1], on the CPU.

    ``latents`` is (N, *generator.latent_shape(space)) in ``space`` ("z", "w" or "wp"); they go
    through the generator ``batch_size`` at a time, on its device. Raises TlganError for a
    space the generator lacks or latents of the wrong shape.
    """
    device = generator.device
    parts = [
        generator.synthesize(latents[i : i + batch_size].to(device), space).float().cpu()
        for i in range(0, len(latents), batch_size)
    ]
    return torch.cat(parts)


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
        raise TlganError(
            f"interpolate needs a latent (D,) and a direction of the same size; got shapes "
            f"{tuple(latent.shape)} and {tuple(direction.shape)}"
        )
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


__all__ = [
    "edit_latents",
    "edit_direction",
    "edit_latents_grid",
    "interpolate",
    "check_axes_for",
    "draw_latents",
]
