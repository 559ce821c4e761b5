"""A synthetic check for learned edits: the generator sees its latent through a known curve.

``toyfaces-gan``'s ``z`` *is* the toyfaces world's latent, and the factors the benchmark
changes move along straight lines of it (yaw: one base direction; smile, age: one
attribute direction) or along an arc (the light turns in a plane). There a straight-line
edit is the truth for most factors, and a learned edit can only win through the
inversions' errors. To see whether the learned edit follows a path that *is* curved, the
benchmark can wrap the generator in a fixed, known, smooth and exactly invertible warp
(:class:`BendWarp`): the wrapped generator draws ``G(warp(u))``, so in its latent ``u`` the
path of a factor is the straight world path pulled back through the warp, which bends.

This is an evaluation device (``tlgan delta eval --warp bend:0.3``), not a generator to edit
with: numbers measured through it describe the warped toy, not the bundled generator.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
from torch import nn

from tlgan.errors import TlganError
from tlgan.models.base import Generator
from tlgan.toyfaces import world

#: The factor axes the default bend curves (the first base direction of each benchmark factor)
#: and the direction they are bent into (the Male direction: a visible, classifier-read change).
DEFAULT_BENT = ("yaw", "light_angle", "smile", "age")
DEFAULT_INTO = "Male"


def factor_axis(factor: str) -> torch.Tensor:
    """Unit world direction (512,) that drives ``factor``: its attribute's direction, or the
    first base direction of a nuisance (yaw: e16, light_angle: e17)."""
    for attribute, name in world.FACTOR_OF.items():
        if name == factor:
            return world.true_directions()[world.ATTRIBUTES.index(attribute)]
    if factor in world.NUISANCE_BASES:
        return world.base_directions()[world.NUISANCE_BASES[factor][0][0]]
    raise TlganError(f"unknown toyfaces factor {factor!r}; known: {', '.join(world.FACTOR_NAMES)}")


class BendWarp(nn.Module):
    """``z = warp(u) = u + k * sum_m (p_m . u)^2 q``: a quadratic bend of axes P into q.

    ``axes`` P (M, D) orthonormal rows, ``into`` q (D,) a unit vector orthogonal to them,
    ``strength`` k. Since q is orthogonal to every p_m, ``p_m . warp(u) = p_m . u``, so the
    inverse is exact: ``u = z - k * sum_m (p_m . z)^2 q``; the Jacobian is triangular with
    unit determinant and the map is a polynomial (smooth everywhere). A world path that
    moves along p_m (a straight line of z) becomes the parabola ``u(t) = z(t) - k t^2 q``.
    """

    def __init__(self, axes: torch.Tensor, into: torch.Tensor, strength: float):
        super().__init__()
        axes = torch.as_tensor(axes, dtype=torch.float64).reshape(-1, torch.as_tensor(into).numel())
        into = torch.as_tensor(into, dtype=torch.float64).reshape(-1)
        if not math.isfinite(float(strength)):
            raise TlganError(f"the bend strength must be a finite number, not {strength}")
        gram = axes @ axes.T
        if not torch.allclose(gram, torch.eye(len(axes), dtype=torch.float64), atol=1e-5):
            raise TlganError("the bent axes must be orthonormal")
        if abs(float(into.norm()) - 1) > 1e-5 or float((axes @ into).abs().max()) > 1e-5:
            raise TlganError(
                "the direction bent into must be a unit vector orthogonal to the bent axes; otherwise "
                "the warp is not invertible"
            )
        self.strength = float(strength)
        self.register_buffer("axes", axes.float())
        self.register_buffer("into", into.float())

    def _bend(self, x: torch.Tensor) -> torch.Tensor:
        coords = x.to(torch.float64) @ self.axes.to(torch.float64).T  # (N, M)
        return (self.strength * coords.pow(2).sum(1, keepdim=True) * self.into.to(torch.float64)).to(x.dtype)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """u (N, D) -> z (N, D); differentiable."""
        return u + self._bend(u)

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, D) -> u (N, D), exactly ``forward``'s inverse."""
        return z - self._bend(z)


def parse_warp(spec: str, factors: Sequence[str] = DEFAULT_BENT) -> BendWarp | None:
    """``"bend:K"`` or ``"bend:K:ATTRIBUTE"`` -> a :class:`BendWarp` of ``factors``' axes
    (:func:`factor_axis`) into the direction of ATTRIBUTE (default Male), strength K;
    ``"none"`` or ``""`` -> None."""
    text = str(spec or "").strip()
    if text.lower() in ("", "none"):
        return None
    m = re.fullmatch(r"bend:([^:]+)(?::(\w+))?", text)
    try:
        strength = float(m.group(1)) if m else None
    except ValueError:
        strength = None
    if strength is None or not math.isfinite(strength):
        raise TlganError(
            f"cannot read warp {spec!r}; write bend:STRENGTH or bend:STRENGTH:ATTRIBUTE, e.g. bend:0.3 "
            f"(or none)"
        )
    into_name = m.group(2) or DEFAULT_INTO
    if into_name not in world.ATTRIBUTES:
        raise TlganError(
            f"warp {spec!r}: {into_name!r} is not a toyfaces attribute; one of {', '.join(world.ATTRIBUTES)}"
        )
    axes = torch.stack([factor_axis(f) for f in factors]).double()
    into = world.true_directions()[world.ATTRIBUTES.index(into_name)].double()
    # q must be orthogonal to every bent axis: keep its part outside their span.
    into = into - axes.T @ (axes @ into)
    if float(into.norm()) < 1e-3:
        raise TlganError(
            f"warp {spec!r}: {into_name} lies in the span of the bent factors' axes; bend into another "
            f"attribute"
        )
    return BendWarp(axes, into / into.norm(), strength)


class WarpedGenerator(Generator):
    """``inner.synthesize(warp(u))`` for u (N, z_dim): the generator seen through a warp.

    ``to_world(u)`` gives the world latent a toyfaces generator draws (``warp(u)``), so the
    benchmark can still read the true factors of an edited latent; ``from_world`` is its
    inverse (the world's exact edits, :mod:`tlgan.delta.truth`, are pulled back through it).
    """

    spaces = ("z",)

    def __init__(self, inner: Generator, warp: BendWarp, spec: str = "warp"):
        super().__init__()
        if warp.into.numel() != inner.z_dim:
            raise TlganError(
                f"the warp acts on {warp.into.numel()}-d latents, generator {inner.name!r} takes "
                f"{inner.z_dim}-d z"
            )
        self.inner = inner
        self.warp = warp
        self.name = f"{inner.name}+{spec}"
        self.z_dim = inner.z_dim
        self.img_resolution = inner.img_resolution
        # Modules start in training mode; a generator is used in eval mode, and helpers that
        # restore a module's mode (the inversion's) would otherwise switch the inner one to
        # training and change what it draws.
        self.train(inner.training)

    def _synthesize(self, latents: torch.Tensor, space: str) -> torch.Tensor:
        return self.inner.synthesize(self.warp(latents), "z")

    def to_world(self, latents: torch.Tensor) -> torch.Tensor:
        return self.warp(torch.as_tensor(latents).reshape(-1, self.z_dim).to(self.warp.into.device))

    def from_world(self, z: torch.Tensor) -> torch.Tensor:
        """World latents (N, z_dim) -> this generator's latents u with ``to_world(u) = z``, exactly."""
        warp = self.warp
        return warp.inverse(torch.as_tensor(z).reshape(-1, self.z_dim).to(warp.into.device, warp.into.dtype))


class WarpedEncoder(nn.Module):
    """The inner generator's encoder followed by the warp's inverse: a start for inversions."""

    space = "z"

    def __init__(self, inner: nn.Module, warp: BendWarp):
        super().__init__()
        self.inner = inner
        self.warp = warp

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.inner.latent_shape)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.warp.inverse(self.inner(images))


def warped(generator: Generator, spec: str, factors: Sequence[str] = DEFAULT_BENT):
    """(WarpedGenerator, its encoder or None) for ``spec`` (see :func:`parse_warp`), or
    (generator, "auto") when ``spec`` is none."""
    warp = parse_warp(spec, factors)
    if warp is None:
        return generator, "auto"
    if getattr(generator, "z_dim", None) != world.Z_DIM:
        raise TlganError(
            f"--warp bends the toyfaces world's latent; generator {generator.name!r} has "
            f"z_dim {getattr(generator, 'z_dim', None)}, not {world.Z_DIM}"
        )
    from tlgan.models.zoo import bundled_encoder

    wrapped = WarpedGenerator(generator, warp.to(generator.device), spec=str(spec).strip())
    inner_encoder = bundled_encoder(generator)
    return wrapped, (None if inner_encoder is None else WarpedEncoder(inner_encoder, wrapped.warp))


__all__ = [
    "BendWarp",
    "WarpedGenerator",
    "WarpedEncoder",
    "parse_warp",
    "warped",
    "factor_axis",
    "DEFAULT_BENT",
]
