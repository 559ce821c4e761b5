"""The world's own edit of a latent: the reference a learned edit is measured against.

The toyfaces world reads every factor from the coordinates of its latent on the first 25
base directions (e0..e15 through the attribute directions, e16..e24 directly for the
nuisances; see :func:`tlgan.toyfaces.world.factors`). So the exact change of one factor of
a face, with every other factor of that face kept, is a change of those coordinates, and the
smallest such change is a pseudo-inverse away (:func:`set_factor`). Applied to an inverted
latent (:func:`exact_edit`) it is what a perfect edit of that latent does: the requested
change of that face, nothing else, through any known warp of the generator's latent. Its
PSNR against the true render and its classifier off-target change are the figures no edit
of the same start can beat by construction of the world (the classifier's reading of a
face whose light turns moves a little by itself).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from tlgan.errors import TlganError
from tlgan.toyfaces import world

#: Nuisance factors read as ``centre + half * tanh(t / 1.5)`` of one coordinate: (centre, half).
_TANH_NUISANCES = {
    "yaw": (0.0, 30.0),
    "background_brightness": (0.6, 0.25),
    "scale": (1.0, 0.08),
    "shift_x": (0.0, 3.0),
    "shift_y": (0.0, 3.0),
}
#: Nuisance factors that are the angle of a 2-d projection: (degrees per turn).
_ANGLE_NUISANCES = {"light_angle": 360.0, "background_hue": 1.0}
_EPS = 1e-6


@lru_cache(maxsize=1)
def _constraints() -> torch.Tensor:
    """(17 + 9, 512) float64: the attribute directions, then the nuisance base directions."""
    bases = world.base_directions().double()
    nuisance_rows = [k for name in world.NUISANCES for k in world.NUISANCE_BASES[name][0]]
    return torch.cat([world.true_directions().double(), bases[nuisance_rows]])


def _row_of(name: str) -> int:
    """Index into :func:`_constraints` of the first row that drives factor ``name``."""
    for j, attribute in enumerate(world.ATTRIBUTES):
        if world.FACTOR_OF[attribute] == name:
            return j
    offset = len(world.ATTRIBUTES)
    for nuisance in world.NUISANCES:
        if nuisance == name:
            return offset
        offset += len(world.NUISANCE_BASES[nuisance][0])
    raise TlganError(f"unknown toyfaces factor {name!r}; known: {', '.join(world.FACTOR_NAMES)}")


def _attribute_score(attribute: str, values: torch.Tensor) -> torch.Tensor:
    """The attribute score s that :func:`tlgan.toyfaces.world.factors` turns into ``values``."""
    if attribute == "Young":
        ratio = ((world.AGE_AT_THRESHOLD - values) / world.AGE_SPAN).clamp(-1 + _EPS, 1 - _EPS)
        return 1.5 * torch.atanh(ratio)
    amount = (values - world.NOSE_MIN) / world.NOSE_SPAN if attribute == "Big_Nose" else values
    amount = amount.clamp(_EPS, 1 - _EPS)
    return torch.logit(amount) / world.STEEPNESS[attribute]


def set_factor(z: torch.Tensor, factor: str, values) -> torch.Tensor:
    """World latents ``z`` (N, 512) with ``factor`` set to ``values`` (N,) and every other factor
    kept: the smallest change of z that does it. Returns (N, 512) in z's dtype.

    Attribute amounts, age and nose size set their score; nuisances their coordinates (an
    angle keeps its projection's radius, as the toyfaces sequences do). Values outside what
    the world produces are clamped to just inside it. Raises TlganError for an unknown factor
    or for mismatched shapes.
    """
    z = torch.as_tensor(z)
    if z.ndim != 2 or z.shape[1] != world.Z_DIM:
        raise TlganError(f"world latents must have shape (N, {world.Z_DIM}); got {tuple(z.shape)}")
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if len(values) != len(z):
        raise TlganError(f"{len(values)} factor values for {len(z)} latents; give one value per latent")
    row = _row_of(factor)
    c = _constraints().to(z.device)
    x = z.to(torch.float64)
    current = x @ c.T  # (N, 26); attribute biases cancel in the difference
    target = current.clone()
    values = values.to(z.device)
    if row < len(world.ATTRIBUTES):
        attribute = world.ATTRIBUTES[row]
        target[:, row] = _attribute_score(attribute, values) - float(world.biases().double()[row])
    elif factor in _TANH_NUISANCES:
        centre, half = _TANH_NUISANCES[factor]
        target[:, row] = 1.5 * torch.atanh(((values - centre) / half).clamp(-1 + _EPS, 1 - _EPS))
    else:
        radius = current[:, row : row + 2].norm(dim=1)
        angle = values * (2 * math.pi / _ANGLE_NUISANCES[factor])
        target[:, row] = radius * torch.cos(angle)
        target[:, row + 1] = radius * torch.sin(angle)
    # The least-norm solution, (N, 512). The three hair directions share two base directions, so
    # the rows are one short of full rank; the cut drops the direction they leave undefined
    # (float32 rows would otherwise give it a tiny singular value and a large pseudo-inverse).
    change = (target - current) @ torch.linalg.pinv(c, rtol=1e-6).T
    return (x + change).to(z.dtype)


def _world_maps(generator):
    """(to_world, from_world) for a generator whose latent is the world's (identities) or a
    known warp of it (its ``to_world`` and ``from_world``); None otherwise."""
    to_world, from_world = getattr(generator, "to_world", None), getattr(generator, "from_world", None)
    if callable(to_world) and callable(from_world):
        return to_world, from_world
    if callable(to_world) or not world.shares_world_latents(generator):
        return None
    return (lambda x: x), (lambda x: x)


def exact_edit(generator, latents: torch.Tensor, factor: str, values) -> torch.Tensor | None:
    """The world's own change of ``factor`` to ``values`` (N,) of each latent (N, z_dim) of
    ``generator`` (every other factor of that face kept): (N, z_dim) float32 on the CPU, or
    None when the generator's latent is neither the world's nor a known warp of it."""
    maps = _world_maps(generator)
    if maps is None:
        return None
    to_world, from_world = maps
    with torch.no_grad():
        z = to_world(torch.as_tensor(latents).reshape(-1, world.Z_DIM))
        return from_world(set_factor(z, factor, values)).float().cpu()


def exact_mean_path(generator, identities: torch.Tensor, factor: str, values) -> torch.Tensor | None:
    """The exact sequences of ``factor`` over ``values`` (n,) of each identity's world latent
    (K, 512), in the generator's latent, centred on each sequence's mean and averaged over the
    identities: the mean path (n, z_dim) of noise-free training sequences, float32; None as
    :func:`exact_edit`."""
    maps = _world_maps(generator)
    if maps is None:
        return None
    z = torch.as_tensor(identities)
    vals = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    with torch.no_grad():
        path = torch.stack(
            [maps[1](set_factor(z, factor, torch.full((len(z),), float(v)))).double().cpu() for v in vals], 1
        )  # (K, n, D)
    return (path - path.mean(1, keepdim=True)).mean(0).float()


def reference_edits(generator, factor, starts, values, train_world, sequence_values, pairs):
    """The truth's reference edits of ``starts`` (T*P, D), the held-out starts of P pairs of steps
    ``pairs`` = (i, j) index tensors (P,) repeated T times, each to be changed to ``values``
    (T*P,): {"exact": the world's own change of each start, "exact_mean": the mean change of
    the training identities' noise-free sequences (``train_world`` (K, 512) world latents,
    ``sequence_values`` (n,) per step) added to each start}; {} when the generator's latent is
    not the world's, and no "exact_mean" without ``train_world``."""
    exact = exact_edit(generator, starts, factor, values)
    if exact is None:
        return {}
    out = {"exact": exact}
    if train_world is not None:
        ii, jj = pairs
        path = exact_mean_path(generator, train_world, factor, sequence_values)
        out["exact_mean"] = starts + (path[jj] - path[ii]).repeat(len(starts) // len(ii), 1)
    return out


__all__ = ["set_factor", "exact_edit", "exact_mean_path", "reference_edits"]
