"""StyleGAN (Karras et al., 2019, "A Style-Based Generator Architecture for Generative Adversarial
Networks"), the generator of InterFaceGAN's z, w and wp boundaries, in one file to read top to bottom.

    z (N, z_dim) --mapping--> w (N, w_dim) --broadcast, truncation--> wp (N, num_ws, w_dim) --synthesis--> image

- **Mapping**: pixel norm of z, then ``mapping_layers`` fully connected layers with leaky ReLU
  (slope 0.2), equalised learning rate with multiplier ``mapping_lrmul`` (0.01: weights and
  biases are both scaled by it). ``truncation.w_avg`` is the mean w seen in training.
- **Synthesis**: layers 2k and 2k + 1 work at side 4 * 2^k; ``num_ws`` = 2 log2(R) - 2, one w
  each. Layer 0 starts from a learned constant (1, C, 4, 4); layer 2k (k >= 1) doubles the side,
  by nearest upsampling and a 3x3 convolution or, at 128 px and above (``fused_scale`` "auto"),
  by one stride-2 transposed convolution (the PGGAN trick), then blurs with the [1, 2, 1]
  binomial filter; layer 2k + 1 is a 3x3 convolution. Every layer ends with the *epilogue*:
  per-pixel noise times a learned per-channel strength, bias, leaky ReLU, instance norm, and
  AdaIN's style modulation ``x * (1 + scale) + shift``, (scale, shift) an affine map of its w.
- **toRGB**: a 1x1 convolution per level (gain 1); ``lod`` > 0 (a snapshot while growing) blends
  levels as PGGAN does.
- Channels at side 2^r: min(fmap_base // 2^(r - 1), fmap_max).

Parameter and buffer names follow InterFaceGAN's PyTorch conversion (``mapping.dense0.linear.weight``,
``truncation.w_avg``, ``synthesis.layer0.first_layer``, ``synthesis.layer{i}.epilogue.style_mod.dense
.linear.weight``, ..., ``synthesis.output{k}.conv.weight``, ``synthesis.lod``; fused kernels are
``synthesis.layer{i}.weight`` in TensorFlow's (3, 3, in, out) layout), so those ``.pth`` files load
without renaming.

Truncation has the semantics of :mod:`tlgan.models.style_based` (shared with StyleGAN2): ``truncation_psi`` = psi replaces
w by ``w_avg + psi (w - w_avg)``; with ``truncation_cutoff`` = c only for the first c layers, applied
in w -> wp; without a cutoff for every layer, applied in z -> w. Unlike StyleGAN2's, the
constructor takes them, so a model keeps its published setting: the NVlabs and InterFaceGAN
files are read with psi 0.7 on the first 8 layers (``G_style``'s defaults, InterFaceGAN's
settings). So InterFaceGAN's ``w`` (the mapping's output, untruncated) and ``wp`` (truncated)
are tlgan's ``w`` and ``wp``; ``configure(truncation_psi=1)`` turns truncation off.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlgan.errors import TlganError
from tlgan.models.pggan import (
    LRELU_SLOPE,
    WScale,
    check_progressive_resolution,
    fused_upsample_kernel,
    grown_images,
    nf,
    pixel_norm,
    upscale2d,
)
from tlgan.models.style_based import StyleBasedGenerator

FUSED_MIN_RESOLUTION = 128  # fused_scale "auto": fused upsampling where the output side is at least this
INSTANCE_NORM_EPS = 1e-8


def instance_norm(x: torch.Tensor, eps: float = INSTANCE_NORM_EPS) -> torch.Tensor:
    """Zero mean, unit root mean square over each channel's pixels: (N, C, H, W) -> same."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x * (x.square().mean(dim=(2, 3), keepdim=True) + eps).rsqrt()


def blur_kernel(taps: Sequence[float] = (1.0, 2.0, 1.0)) -> torch.Tensor:
    """The normalised separable low-pass kernel (K, K) applied after upsampling."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def uses_fused_scale(fused_scale: bool | str, resolution: int) -> bool:
    """Whether the upsampling layer that outputs side ``resolution`` is fused."""
    if fused_scale == "auto":
        return resolution >= FUSED_MIN_RESOLUTION
    return bool(fused_scale)


class Dense(nn.Module):
    """Fully connected layer with equalised learning rate: (N, in) -> (N, out) = x W^T * c + b * lrmul.

    c = gain / sqrt(in) * lrmul. Keys ``linear.weight`` (out, in) and ``wscale.bias`` (out,).
    """

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2.0), lrmul: float = 1.0):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.wscale = WScale(in_features, out_features, gain * lrmul)
        self.lrmul = float(lrmul)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.linear.weight) * self.wscale.scale + self.wscale.bias * self.lrmul

    def effective_weight(self) -> torch.Tensor:
        return self.linear.weight * self.wscale.scale


class MappingNetwork(nn.Module):
    """z (N, z_dim) -> w (N, w_dim): pixel norm, then ``num_layers`` leaky-ReLU dense layers ``dense{i}``."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int = 8, fmaps: int = 512, lrmul: float = 0.01):
        super().__init__()
        self.num_layers = int(num_layers)
        features = [z_dim] + [fmaps] * (self.num_layers - 1) + [w_dim]
        for i in range(self.num_layers):
            setattr(self, f"dense{i}", Dense(features[i], features[i + 1], lrmul=lrmul))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(z)
        for i in range(self.num_layers):
            x = F.leaky_relu(getattr(self, f"dense{i}")(x), LRELU_SLOPE)
        return x


class Truncation(nn.Module):
    """Holds ``w_avg`` (the key ``truncation.w_avg``); the pull toward it is in :mod:`tlgan.models.style_based`."""

    def __init__(self, w_dim: int):
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(w_dim))


class NoiseInput(nn.Module):
    """Adds noise (stored ``noise`` (1, 1, S, S), fresh, or none) times a per-channel strength ``weight``."""

    def __init__(self, channels: int, resolution: int):
        super().__init__()
        self.resolution = int(resolution)
        self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if noise_mode == "none":
            return x
        if noise_mode == "random":
            noise = torch.randn(
                x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype
            )
        else:
            noise = self.noise.to(x.dtype)
        return x + noise * self.weight.view(1, -1, 1, 1)


class StyleMod(nn.Module):
    """AdaIN's modulation: x * (1 + scale) + shift, with (scale, shift) = ``dense``(w) (gain 1), (N, 2C)."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.channels = int(channels)
        self.dense = Dense(w_dim, 2 * channels, gain=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.dense(w).view(-1, 2, self.channels, 1, 1)
        return x * (style[:, 0] + 1.0) + style[:, 1]


class Epilogue(nn.Module):
    """The end of every synthesis layer: noise, bias, leaky ReLU, instance norm, style modulation."""

    def __init__(self, channels: int, w_dim: int, resolution: int):
        super().__init__()
        self.apply_noise = NoiseInput(channels, resolution)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style_mod = StyleMod(channels, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        x = self.apply_noise(x, noise_mode) + self.bias.view(1, -1, 1, 1)
        x = instance_norm(F.leaky_relu(x, LRELU_SLOPE))
        return self.style_mod(x, w)


class ConstLayer(nn.Module):
    """Layer 0: the learned constant ``first_layer`` (1, C, 4, 4) through the epilogue, for w (N, w_dim)."""

    def __init__(self, channels: int, w_dim: int):
        super().__init__()
        self.first_layer = nn.Parameter(torch.ones(1, channels, 4, 4))
        self.epilogue = Epilogue(channels, w_dim, 4)

    def forward(self, x: torch.Tensor | None, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        return self.epilogue(self.first_layer.expand(w.shape[0], -1, -1, -1), w, noise_mode)


class ConvLayer(nn.Module):
    """3x3 convolution (gain sqrt(2)) [after 2x upsampling, then blur] and the epilogue.

    (N, C_in, S, S), w (N, w_dim) -> (N, C_out, S', S'), S' = 2S when ``upsample``. ``fused``
    upsampling keeps its kernel as ``weight`` (3, 3, C_in, C_out); the others as ``conv.weight``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        upsample: bool = False,
        fused: bool = False,
    ):
        super().__init__()
        self.upsample, self.fused = bool(upsample), bool(upsample and fused)
        if self.fused:
            self.weight = nn.Parameter(torch.randn(3, 3, in_channels, out_channels))
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.scale = math.sqrt(2.0) / math.sqrt(in_channels * 9)
        if self.upsample:
            self.register_buffer(
                "blur_kernel", blur_kernel()[None, None].repeat(out_channels, 1, 1, 1), persistent=False
            )
        self.epilogue = Epilogue(out_channels, w_dim, resolution)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if self.fused:
            x = F.conv_transpose2d(x, fused_upsample_kernel(self.weight), stride=2, padding=1) * self.scale
        else:
            x = self.conv(upscale2d(x) if self.upsample else x) * self.scale
        if self.upsample:
            x = F.conv2d(x, self.blur_kernel.to(x.dtype), padding=1, groups=x.shape[1])
        return self.epilogue(x, w, noise_mode)


class ToRGB(nn.Module):
    """1x1 convolution (gain 1) and bias: (N, C, S, S) -> (N, img_channels, S, S)."""

    def __init__(self, in_channels: int, img_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, img_channels, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.scale = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale + self.bias.view(1, -1, 1, 1)


class SynthesisNetwork(nn.Module):
    """wp (N, num_ws, w_dim) -> unclamped images (N, img_channels, R, R)."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        fused_scale: bool | str = "auto",
    ):
        super().__init__()
        self.num_levels = int(math.log2(img_resolution)) - 1
        self.num_ws = 2 * self.num_levels
        channels = [nf(level + 1, fmap_base, fmap_max) for level in range(self.num_levels)]
        for level, ch in enumerate(channels):
            res = 4 * 2**level
            if level == 0:
                first: nn.Module = ConstLayer(ch, w_dim)
            else:
                first = ConvLayer(
                    channels[level - 1],
                    ch,
                    w_dim,
                    res,
                    upsample=True,
                    fused=uses_fused_scale(fused_scale, res),
                )
            setattr(self, f"layer{2 * level}", first)
            setattr(self, f"layer{2 * level + 1}", ConvLayer(ch, ch, w_dim, res))
            setattr(self, f"output{level}", ToRGB(ch, img_channels))
        self.register_buffer("lod", torch.zeros(()))

    def layers(self) -> list[nn.Module]:
        """The synthesis layers in order; layer i takes w number i of wp."""
        return [getattr(self, f"layer{i}") for i in range(self.num_ws)]

    def forward(self, wp: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        def block(level: int) -> Callable[[torch.Tensor | None], torch.Tensor]:
            first, second = getattr(self, f"layer{2 * level}"), getattr(self, f"layer{2 * level + 1}")
            return lambda x: second(first(x, wp[:, 2 * level], noise_mode), wp[:, 2 * level + 1], noise_mode)

        blocks = [block(level) for level in range(self.num_levels)]
        to_rgbs = [getattr(self, f"output{level}") for level in range(self.num_levels)]
        return grown_images(None, blocks, to_rgbs, float(self.lod))


class StyleGANGenerator(StyleBasedGenerator):
    """The StyleGAN (v1) generator, unconditional, as a tlgan :class:`Generator` with spaces z, w and wp.

    ``synthesize(latents, space)`` takes z (N, z_dim), w (N, w_dim) or wp (N, num_ws, w_dim) and
    returns images (N, 3, R, R) clamped to [-1, 1]; ``synthesis(wp)`` gives them unclamped.
    ``configure`` changes truncation and the noise mode (``"const"``, the stored noise: images
    are deterministic, as InterFaceGAN renders them); see :mod:`tlgan.models.style_based`.
    """

    family = "StyleGAN"
    noise_buffer = "noise"

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        img_resolution: int = 1024,
        img_channels: int = 3,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        mapping_layers: int = 8,
        mapping_fmaps: int = 512,
        mapping_lrmul: float = 0.01,
        fused_scale: bool | str = "auto",
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
    ):
        super().__init__()
        img_resolution = check_progressive_resolution(img_resolution, fmap_base, fmap_max, "StyleGAN")
        for key, value in (
            ("z_dim", z_dim),
            ("w_dim", w_dim),
            ("mapping_layers", mapping_layers),
            ("mapping_fmaps", mapping_fmaps),
        ):
            if int(value) < 1:
                raise TlganError(f"{key} must be a positive integer, not {value}")
        if fused_scale not in (True, False, "auto"):
            raise TlganError(f'fused_scale must be true, false or "auto", not {fused_scale!r}')
        self.config_kwargs: dict[str, Any] = {
            "z_dim": int(z_dim),
            "w_dim": int(w_dim),
            "img_resolution": img_resolution,
            "img_channels": int(img_channels),
            "fmap_base": int(fmap_base),
            "fmap_max": int(fmap_max),
            "mapping_layers": int(mapping_layers),
            "mapping_fmaps": int(mapping_fmaps),
            "mapping_lrmul": float(mapping_lrmul),
            "fused_scale": fused_scale,
            "truncation_psi": float(truncation_psi),
            "truncation_cutoff": None if truncation_cutoff is None else int(truncation_cutoff),
        }
        self.name = "stylegan"
        self.z_dim, self.w_dim = int(z_dim), int(w_dim)
        self.img_resolution, self.img_channels = img_resolution, int(img_channels)
        self.mapping = MappingNetwork(
            self.z_dim, self.w_dim, int(mapping_layers), int(mapping_fmaps), float(mapping_lrmul)
        )
        self.truncation = Truncation(self.w_dim)
        self.synthesis = SynthesisNetwork(
            self.w_dim, img_resolution, self.img_channels, int(fmap_base), int(fmap_max), fused_scale
        )
        self.num_ws = self.synthesis.num_ws
        self._init_style_options(truncation_psi, truncation_cutoff)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.truncation.w_avg

    # -- for closed-form directions (SeFa) ---------------------------------------------------

    def latent_weight(self, space: str = "w", layers: Sequence[int] | None = None) -> torch.Tensor:
        """The style affine weights (2 C per layer, w_dim) of the layers that take wp layers ``layers``, stacked.

        SeFa's A for StyleGAN: directions n that maximise ||A n|| change the styles most.
        ``layers`` None means all ``num_ws`` layers.
        """
        if space not in ("w", "wp"):
            raise TlganError(f"StyleGAN's style weights take w, not {space!r}; fit SeFa in w")
        chosen = range(self.num_ws) if layers is None else [int(k) for k in layers]
        bad = [k for k in chosen if not 0 <= k < self.num_ws]
        if bad:
            raise TlganError(f"layer(s) {bad} do not exist; this generator's are 0-{self.num_ws - 1}")
        synthesis_layers = self.synthesis.layers()
        return torch.cat(
            [synthesis_layers[k].epilogue.style_mod.dense.effective_weight().detach() for k in chosen]
        )
