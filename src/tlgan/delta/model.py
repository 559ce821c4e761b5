"""Delta-GAN-Encoder (Diamant et al., arXiv 2111.08419): a learned, possibly curved, edit.

Two small networks over flattened latents of size D (a ``z`` or ``w`` vector, or a ``wp``
latent (num_ws, w_dim) flattened):

- the *delta encoder* ``E(a_i, a_j)`` -> ``Δ`` (delta_dim,): a low-dimensional code of the
  change from latent ``a_i`` to ``a_j``;
- the *delta decoder* ``D(b, Δ)`` -> a residual (D,): the edited latent is ``b + D(b, Δ)``.
  Because D sees ``b``, the move may depend on where ``b`` is, so the edit can follow a
  curved path (a rotation, a saturating factor) that no single straight line follows.

Each network is two dense layers with a LeakyReLU between them (the parent method's size).
E reads ``[a_i, a_j - a_i]`` (the same information as the pair, with the change given
directly). Both are written so that "no change" is exact: the code is
``e(a_i, a_j) - e(a_i, a_i)`` (zero when a_j = a_i) and the residual is
``d(b, Δ) - d(b, 0)`` (zero when Δ = 0), where e and d are the two-layer networks; so
``alpha = 0`` returns the latent unchanged and ``-alpha`` heads the other way. Latents are centred and scaled by statistics of the training latents (the
``center`` and ``scale`` buffers), so one set of sizes suits spaces of any scale.

With ``subspace = r > 0`` both networks work in the r leading principal directions of the
training sequences' within-sequence variation (the ``basis`` buffer, (r, D)): E and D read
the coordinates of latents in that basis and D's residual lies in its span. Inverted
latents of one face differ between steps in hundreds of directions the image does not
depend on; a decoder over all D outputs learns that noise from a few sequences and
carries it into every edit, while the change itself spans a few directions (a light
moving turns a plane). ``subspace = 0`` is the plain method over the whole space.

The decoder comes in three kinds (``decoder``): ``position``, the parent method's D(b, Δ);
``shared``, a network of the code alone, S(Δ), one curved path of changes (S(αΔ) as α
grows) that every latent follows; ``both``, their sum S(Δ) + D(b, Δ), whose position part
training keeps small (see :func:`tlgan.delta.train.train_delta`). From a few inverted
sequences a decoder that depends on where b is extrapolates into places it has not seen;
the shared part carries what every sequence shows. Model folders written before the
setting hold ``position`` decoders and load as such.

A trained model also keeps ``reference_delta``: the code that best reproduces one training
step from every training position (fitted after training, starting from the mean of
``E(a_i, a_{i+1})``), whose factor change is ``info["unit"]``; ``info["step_codes"]``, the
same for s = ±1, ±2, ... steps; ``edit(latents, alpha)`` moves by ``alpha`` such steps
(:meth:`DeltaModel.alpha_codes`). And ``linear_direction``: the least-squares latent change
per unit of factor over the same data, the best straight line, kept for comparison.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlgan.errors import TlganError
from tlgan.io import load_state, read_json, save_module

FORMAT = "tlgan.delta/1"
MODEL_FILE = "model"  # model.json + model.safetensors


class DeltaEncoder(nn.Module):
    """(a_i, a_j) (N, D) each, normalised -> Δ (N, delta_dim)."""

    def __init__(self, dim: int, delta_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(2 * dim, hidden)
        self.act = nn.LeakyReLU(0.2)
        self.fc2 = nn.Linear(hidden, delta_dim)

    def net(self, a_i: torch.Tensor, a_j: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(torch.cat([a_i, a_j - a_i], dim=1))))

    def forward(self, a_i: torch.Tensor, a_j: torch.Tensor) -> torch.Tensor:
        return self.net(a_i, a_j) - self.net(a_i, a_i)


class DeltaDecoder(nn.Module):
    """(b (N, D), Δ (N, delta_dim)), normalised -> residual (N, D) in normalised units."""

    def __init__(self, dim: int, delta_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim + delta_dim, hidden)
        self.act = nn.LeakyReLU(0.2)
        self.fc2 = nn.Linear(hidden, dim)

    def net(self, b: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(torch.cat([b, delta], dim=1))))

    def forward(self, b: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return self.net(b, delta) - self.net(b, torch.zeros_like(delta))


class SharedDecoder(nn.Module):
    """Δ (N, delta_dim) -> residual (N, width): the part of the change every latent shares."""

    def __init__(self, width: int, delta_dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(delta_dim, hidden)
        self.act = nn.LeakyReLU(0.2)
        self.fc2 = nn.Linear(hidden, width)

    def net(self, delta: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(delta)))

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        return self.net(delta) - self.net(torch.zeros_like(delta))


#: What the decoder reads: "position" (b and Δ: the parent method), "shared" (Δ alone: one
#: curved path of changes that every latent follows) or "both" (their sum).
DECODERS = ("position", "shared", "both")


class DeltaModel(nn.Module):
    """E and D for latents of shape ``latent_shape`` ((D,) for z / w, (num_ws, w_dim) for wp).

    Constructor arguments are the whole architecture (saved as ``config``); ``info`` holds
    what the model edits (``factor``, ``unit``, ``values``, ``space``, ``generator``) and
    how it was trained.
    """

    def __init__(
        self,
        latent_shape: Sequence[int] = (512,),
        delta_dim: int = 8,
        hidden: int = 256,
        subspace: int = 0,
        decoder: str = "position",
        info: dict[str, Any] | None = None,
    ):
        super().__init__()
        if decoder not in DECODERS:
            raise TlganError(f"decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
        self.decoder_kind = str(decoder)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        if not self.latent_shape or any(s < 1 for s in self.latent_shape):
            raise TlganError(f"latent_shape must be positive sizes, not {latent_shape}")
        if int(delta_dim) < 1 or int(hidden) < 1:
            raise TlganError(f"delta_dim and hidden must be at least 1 (got {delta_dim}, {hidden})")
        self.dim = int(torch.tensor(self.latent_shape).prod())
        self.delta_dim, self.hidden = int(delta_dim), int(hidden)
        self.subspace = int(subspace)
        if not 0 <= self.subspace <= self.dim:
            raise TlganError(f"subspace must be between 0 (the whole space) and {self.dim}, not {subspace}")
        width = self.subspace or self.dim
        self.info: dict[str, Any] = dict(info or {})
        self.encoder = DeltaEncoder(width, self.delta_dim, self.hidden)
        if self.decoder_kind != "shared":
            self.decoder = DeltaDecoder(width, self.delta_dim, self.hidden)
        if self.decoder_kind != "position":
            self.shared = SharedDecoder(width, self.delta_dim, self.hidden)
        if self.subspace:
            self.register_buffer("basis", torch.eye(self.subspace, self.dim))
        self.register_buffer("center", torch.zeros(self.dim))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("reference_delta", torch.zeros(self.delta_dim))
        self.register_buffer("linear_direction", torch.zeros(self.dim))

    @property
    def config(self) -> dict[str, Any]:
        return {
            "latent_shape": list(self.latent_shape),
            "delta_dim": self.delta_dim,
            "hidden": self.hidden,
            "subspace": self.subspace,
            "decoder": self.decoder_kind,
        }

    @property
    def space(self) -> str:
        return str(self.info.get("space", "z"))

    @property
    def factor(self) -> str | None:
        return self.info.get("factor")

    # --- shapes ----------------------------------------------------------------------
    def flatten(self, latents: torch.Tensor, name: str = "latents") -> tuple[torch.Tensor, tuple[int, ...]]:
        """(N, *latent_shape) or (*latent_shape,) -> ((N, D) float, leading shape to restore)."""
        latents = torch.as_tensor(latents)
        if not latents.is_floating_point():
            latents = latents.float()
        k = len(self.latent_shape)
        if tuple(latents.shape[-k:]) != self.latent_shape or latents.ndim > k + 1:
            raise TlganError(
                f"{name} of shape {tuple(latents.shape)} do not fit this edit, which takes latents of "
                f"shape {self.latent_shape} (space {self.space!r}, generator "
                f"{self.info.get('generator', 'unknown')!r}); use latents of that generator and space"
            )
        lead = tuple(latents.shape[:-k])
        flat = latents.reshape(-1, self.dim)
        if not torch.isfinite(flat).all():
            raise TlganError(f"{name} hold NaN or infinite values")
        return flat, lead

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        """Flat latents (N, D) -> the networks' coordinates (N, r or D)."""
        x = (x.to(self.center.dtype) - self.center) / self.scale
        return x @ self.basis.T if self.subspace else x

    def _residual(self, out: torch.Tensor) -> torch.Tensor:
        """The decoder's output (N, r or D) -> a latent change (N, D)."""
        return self.scale * (out @ self.basis if self.subspace else out)

    # --- the method --------------------------------------------------------------------
    def encode(self, a_i: torch.Tensor, a_j: torch.Tensor) -> torch.Tensor:
        """Δ (N, delta_dim) of the change a_i -> a_j, each (N, *latent_shape) or (N, D)."""
        return self.encoder(self._norm(a_i.reshape(-1, self.dim)), self._norm(a_j.reshape(-1, self.dim)))

    def residuals(self, b: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The decoder's two parts in its coordinates, (N, r or D) each: the shared one (zeros
        for the ``position`` decoder) and the position-dependent one (None for ``shared``)."""
        b = b.reshape(-1, self.dim).to(self.center.dtype)
        delta = delta.to(b.dtype)
        if delta.ndim == 1:
            delta = delta.expand(len(b), -1)
        shared = (
            self.shared(delta)
            if self.decoder_kind != "position"
            else b.new_zeros(len(b), self.subspace or self.dim)
        )
        position = self.decoder(self._norm(b), delta) if self.decoder_kind != "shared" else None
        return shared, position

    def move(self, b: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """``b + D(b, Δ)``: (N, D) flat latents and codes (N, delta_dim) (or (delta_dim,), broadcast)."""
        shared, position = self.residuals(b, delta)
        out = shared if position is None else shared + position
        return b.reshape(-1, self.dim).to(self.center.dtype) + self._residual(out)

    def forward(
        self, a_i: torch.Tensor, a_j: torch.Tensor, b_i: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: (â_j, b̂_j), both (N, D)."""
        delta = self.encode(a_i, a_j)
        return self.move(a_i, delta), self.move(b_i, delta)

    def edit(
        self, latents: torch.Tensor, alpha: float = 1.0, delta: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``D(latent, code) + latent`` for each latent; same shape as ``latents``.

        The code is ``alpha * delta`` when ``delta`` is given; otherwise the code of ``alpha``
        training steps (:meth:`alpha_codes`).
        """
        flat, lead = self.flatten(latents)
        if delta is None:
            code = self.alpha_codes(torch.tensor([float(alpha)]))[0]
        else:
            code = torch.as_tensor(delta, dtype=self.center.dtype)
            if code.reshape(-1).shape[0] != self.delta_dim:
                raise TlganError(f"delta has {code.numel()} values; this model's codes have {self.delta_dim}")
            code = float(alpha) * code.reshape(-1)
        with torch.no_grad():
            out = self.move(flat.to(self.center.device), code.to(self.center.device))
        return out.to(device=flat.device).reshape(*lead, *self.latent_shape)

    def alpha_codes(self, alphas: torch.Tensor) -> torch.Tensor:
        """The code of a change of ``alpha`` training steps, for each alpha (N,): (N, delta_dim).

        Models trained with a step table (``info["step_codes"]``: the code fitted to make a
        change of s = ±1, ±2, ... steps from every training position) interpolate it linearly
        between whole steps (0 steps: the zero code) and scale its last code beyond it; on a
        curved path the change of two steps is not twice one step's, and the table says what
        it is. Model folders without the table scale the one-step :attr:`reference_delta`.
        """
        alphas = torch.as_tensor(alphas, dtype=self.center.dtype).reshape(-1).to(self.center.device)
        table = self.info.get("step_codes")
        if not table or not table.get("steps"):
            return alphas[:, None] * self.reference_delta[None]
        steps = torch.tensor([0.0] + [float(s) for s in table["steps"]], dtype=alphas.dtype)
        codes = torch.cat(
            [
                torch.zeros(1, self.delta_dim),
                torch.tensor(table["codes"], dtype=alphas.dtype).reshape(-1, self.delta_dim),
            ]
        )
        order = torch.argsort(steps)
        steps, codes = steps[order].to(alphas.device), codes[order].to(alphas.device)
        inside = alphas.clamp(float(steps[0]), float(steps[-1]))
        hi = torch.searchsorted(steps, inside).clamp(1, len(steps) - 1)
        lo = hi - 1
        weight = ((inside - steps[lo]) / (steps[hi] - steps[lo]))[:, None]
        out = (1 - weight) * codes[lo] + weight * codes[hi]
        # Beyond the table: the end code scaled, as the reference code is.
        scale = torch.where(
            alphas > steps[-1], alphas / steps[-1], torch.where(alphas < steps[0], alphas / steps[0], 1.0)
        )
        return out * scale[:, None]


def save_delta(model: DeltaModel, directory: str | os.PathLike) -> Path:
    """Write ``DIR/model.safetensors`` (weights and buffers) and ``DIR/model.json`` (config + info)."""
    directory = Path(directory)
    save_module(
        directory,
        model,
        {"format": FORMAT, "architecture": "DeltaModel", "kwargs": model.config, "info": model.info},
        name=MODEL_FILE,
    )
    return directory


def load_delta(directory: str | os.PathLike, device: str = "cpu") -> DeltaModel:
    """Read a model written by :func:`save_delta` (a folder, or its model.json); never executes code."""
    path = Path(directory)
    if path.suffix == ".json":
        path = path.parent
    config_path = path / f"{MODEL_FILE}.json"
    if not config_path.is_file():
        raise TlganError(
            f"{path}: not a learned edit (no {MODEL_FILE}.json); train one with `tlgan delta train`"
        )
    config = read_json(config_path)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise TlganError(
            f"{config_path}: not a learned edit (format {config.get('format') if isinstance(config, dict) else None!r}, "
            f"expected {FORMAT!r})"
        )
    try:
        model = DeltaModel(**config["kwargs"], info=config.get("info", {}))
    except (KeyError, TypeError) as exc:
        raise TlganError(f"{config_path}: malformed config ({exc})") from None
    load_state(model, path / f"{MODEL_FILE}.safetensors")
    return model.to(device).eval()


__all__ = [
    "DeltaEncoder",
    "DeltaDecoder",
    "SharedDecoder",
    "DeltaModel",
    "DECODERS",
    "save_delta",
    "load_delta",
    "FORMAT",
]
