"""What the style-based generators (StyleGAN, StyleGAN2) share: the z -> w -> wp path with
truncation, the noise mode, and their load-time options.

A subclass sets ``mapping`` (z -> w), ``synthesis`` (``synthesis(wp, noise_mode)`` -> unclamped
images), ``num_ws``, ``noise_buffer`` (the name of its layers' noise buffers), and a ``w_avg``
property; it calls :meth:`_init_style_options` in its constructor.

Truncation with ``truncation_psi`` = psi replaces w by ``w_avg + psi (w - w_avg)``; with
``truncation_cutoff`` = c only the first c layers' w in wp are. So truncation happens once on
any path: in z -> w when it applies to every layer (a truncated w is still one vector), in
w -> wp when only the first layers are truncated.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.models.base import Generator

NOISE_MODES = ("const", "random", "none")


class StyleBasedGenerator(Generator):
    """Base of :class:`~tlgan.models.stylegan2.StyleGAN2Generator` and
    :class:`~tlgan.models.stylegan1.StyleGANGenerator`: spaces z, w, wp; truncation; noise."""

    spaces = ("z", "w", "wp")
    family = "style-based"  # named in error messages: "StyleGAN2", "StyleGAN"
    noise_buffer = "noise_const"  # the name of each synthesis layer's noise buffer

    def _init_style_options(self, truncation_psi: float = 1.0, truncation_cutoff: int | None = None) -> None:
        self.truncation_psi = 1.0
        self.truncation_cutoff: int | None = None
        self.noise_mode = "const"
        self.configure(truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)

    @property
    def w_avg(self) -> torch.Tensor:
        """The mean w of training, (w_dim,): the centre truncation pulls toward."""
        raise NotImplementedError

    @property
    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.truncation_psi != 1.0:
            out["truncation_psi"] = self.truncation_psi
            if self.truncation_cutoff is not None:
                out["truncation_cutoff"] = self.truncation_cutoff
        if self.noise_mode != "const":
            out["noise_mode"] = self.noise_mode
        return out

    def configure(
        self,
        truncation_psi: float | None = None,
        truncation_cutoff: int | None = None,
        noise_mode: str | None = None,
        **unknown: Any,
    ) -> StyleBasedGenerator:
        """Set truncation (psi toward ``w_avg``, optionally only the first ``truncation_cutoff`` layers) and noise."""
        if unknown:
            raise TlganError(
                f"unknown {self.family} option(s) {', '.join(sorted(unknown))}; "
                f"known: truncation_psi, truncation_cutoff, noise_mode"
                + (
                    "; input_transform (--rotate, --translate) applies to StyleGAN3"
                    if "input_transform" in unknown
                    else ""
                )
            )
        if truncation_psi is not None:
            psi = float(truncation_psi)
            if not math.isfinite(psi):
                raise TlganError(
                    f"truncation_psi must be a finite number (1 = none, 0.7 is common), not {psi}"
                )
            self.truncation_psi = psi
        if truncation_cutoff is not None:
            cutoff = int(truncation_cutoff)
            if not 1 <= cutoff <= self.num_ws:
                raise TlganError(
                    f"truncation_cutoff must be 1..{self.num_ws} (layers of this generator), not {cutoff}"
                )
            self.truncation_cutoff = cutoff
        if noise_mode is not None:
            if noise_mode not in NOISE_MODES:
                raise TlganError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, not {noise_mode!r}")
            self.noise_mode = noise_mode
        return self

    def _truncate(self, w: torch.Tensor) -> torch.Tensor:
        w_avg = self.w_avg.to(w.dtype)
        return w_avg + self.truncation_psi * (w - w_avg)

    def _map_latents(self, latents: torch.Tensor, space: str, to: str) -> torch.Tensor:
        x = latents
        if space == "z":
            x = self.mapping(x)
            if self.truncation_psi != 1.0 and self.truncation_cutoff is None:
                x = self._truncate(x)
            if to == "w":
                return x
        x = x[:, None, :].repeat(1, self.num_ws, 1)
        if self.truncation_psi != 1.0 and self.truncation_cutoff is not None:
            c = self.truncation_cutoff
            x = torch.cat([self._truncate(x[:, :c]), x[:, c:]], dim=1)
        return x

    def _synthesize(self, latents: torch.Tensor, space: str) -> torch.Tensor:
        wp = latents if space == "wp" else self._map_latents(latents, space, "wp")
        return self.synthesis(wp, self.noise_mode).clamp(-1.0, 1.0)

    def noise_maps(self) -> dict[str, torch.Tensor]:
        """The synthesis network's noise buffers (named ``noise_buffer``), by name within ``synthesis``."""
        return {
            name: buf
            for name, buf in self.synthesis.named_buffers()
            if name.rsplit(".", 1)[-1] == self.noise_buffer
        }

    def synthesize_raw(self, wp: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The synthesis network's unclamped output for wp (N, num_ws, w_dim); see :meth:`Generator.synthesize_raw`.

        With ``noise`` the named buffers are swapped for the given maps in this call only (the
        stored ones are untouched) and every layer uses its stored-or-given map ("const" mode).
        """
        wp = self.check_latents(wp, "wp").to(self.device)
        if noise:
            self.check_noise(noise)
            return torch.func.functional_call(self.synthesis, dict(noise), (wp, "const"), strict=False)
        return self.synthesis(wp, self.noise_mode)
