"""StyleGAN2 (Karras et al., 2020, "Analyzing and Improving the Image Quality of StyleGAN"), config F
with the skip generator, in one file to read top to bottom.

    z (N, z_dim) --mapping--> w (N, w_dim) --broadcast, truncation--> wp (N, num_ws, w_dim) --synthesis--> image

- **Mapping**: z is normalised to unit second moment, then ``mapping_layers`` fully connected
  layers with leaky ReLU, each with equalised learning rate scaled by ``mapping_lr`` (0.01).
  ``w_avg`` is the running mean of w seen in training (the centre for truncation).
- **Synthesis**: one block per resolution 4, 8, ..., ``img_resolution``. The 4 x 4 block starts
  from a learned constant. Every 3x3 convolution is *modulated* (its input channels scaled by a
  style, an affine map of that layer's w) and *demodulated* (each output channel divided by the
  norm of its effective weights), then gets per-pixel noise times a learned strength, a bias
  and leaky ReLU. The first convolution of each block above 4 x 4 doubles the side with a
  transposed convolution followed by the [1, 3, 3, 1] low-pass filter. Each block's toRGB
  (modulated 1x1, not demodulated) is added to the upsampled image of the blocks below.
- ``num_ws`` = 2 log2(R) - 2: block b uses one w per convolution, and its toRGB shares the
  w of the next block's first convolution.

Parameter and buffer names follow NVlabs' stylegan2-ada-pytorch state layout
(``mapping.fc0.weight``, ``synthesis.b4.conv1.affine.weight``, ...), so their tensors load
without renaming; other formats map onto these names (``tlgan.models.formats``).

Truncation and noise follow :mod:`tlgan.models.style_based` (shared with StyleGAN v1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlgan.errors import TlganError
from tlgan.models.style_based import NOISE_MODES, StyleBasedGenerator  # noqa: F401 - NOISE_MODES is part of this API

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def lowpass_filter(taps: Sequence[float] = (1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """The separable resampling filter as a normalised 2-D kernel (K, K) summing to 1."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def filter2d(
    x: torch.Tensor, kernel: torch.Tensor, pad: Sequence[int], up: int = 1, gain: float = 1.0
) -> torch.Tensor:
    """Upsample by zero insertion, pad (left, right, top, bottom) and convolve each channel with ``kernel``.

    (N, C, H, W) -> (N, C, H*up + pad_t + pad_b - K + 1, W*up + pad_l + pad_r - K + 1). ``gain``
    scales the kernel; upsampling by 2 needs gain 4 to keep the mean. The kernel is symmetric, so
    convolution and correlation agree.
    """
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [int(p) for p in pad])
    k = (kernel * gain).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, k, groups=c)


def upsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, 2H, 2W): zero insertion then the low-pass filter (the skip images' upsampling)."""
    k = kernel.shape[-1]
    return filter2d(x, kernel, pad=[(k + 1) // 2, (k - 2) // 2, (k + 1) // 2, (k - 2) // 2], up=2, gain=4.0)


class FullyConnected(nn.Module):
    """y = act(x W^T g + b l) with equalised learning rate: W is stored as N(0, 1) / l and scaled
    by g = l / sqrt(in_features) at run time (l = ``lr_multiplier``). (N, in) -> (N, out)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise TlganError(f"activation must be 'linear' or 'lrelu', not {activation!r}")
        self.activation = activation
        self.lr_multiplier = float(lr_multiplier)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / self.lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = self.lr_multiplier / math.sqrt(in_features)

    def effective_weight(self) -> torch.Tensor:
        return self.weight * self.weight_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.addmm(self.bias * self.lr_multiplier, x, self.effective_weight().t())
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
        return x


class MappingNetwork(nn.Module):
    """z (N, z_dim) -> w (N, w_dim): normalise z, then ``num_layers`` leaky-ReLU fully connected layers."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        num_layers: int = 8,
        lr_multiplier: float = 0.01,
        layer_features: int | None = None,
    ):
        super().__init__()
        self.num_layers = int(num_layers)
        hidden = int(layer_features or w_dim)
        features = [z_dim] + [hidden] * (self.num_layers - 1) + [w_dim]
        for i in range(self.num_layers):
            setattr(self, f"fc{i}", FullyConnected(features[i], features[i + 1], "lrelu", lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        return x

    @torch.no_grad()
    def track_w_avg(self, w: torch.Tensor, beta: float = 0.995) -> None:
        """Training: ``w_avg <- w_avg + (1 - beta) (mean of w (N, w_dim) - w_avg)``, the truncation centre."""
        self.w_avg.lerp_(w.detach().float().mean(dim=0).to(self.w_avg.dtype), 1.0 - beta)


class SynthesisLayer(nn.Module):
    """Modulated, demodulated 3x3 convolution + noise + bias + leaky ReLU (optionally upsampling 2x).

    (N, C_in, S, S) and w (N, w_dim) -> (N, C_out, S', S') with S' = 2S when ``up`` else S.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        up: bool = False,
        conv_clamp: float | None = None,
        kernel_size: int = 3,
    ):
        super().__init__()
        self.up = bool(up)
        self.resolution = int(resolution)
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("resample_filter", lowpass_filter(), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        styles = self.affine(w)  # (N, C_in)
        # Demodulation: 1 / ||W_o * s|| over each output channel's modulated weights, formed as
        # sum_i s_i^2 sum_k W_oik^2 so the (N, C_out, C_in, 3, 3) modulated weights never exist.
        dcoefs = (styles.square() @ self.weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()  # (N, C_out)
        x = x * styles[:, :, None, None].to(x.dtype)
        if self.up:
            # Transposed stride-2 conv (side 2S+1), then the filter crops to 2S and smooths.
            x = F.conv_transpose2d(x, self.weight.transpose(0, 1).to(x.dtype), stride=2)
            pad = (self.resample_filter.shape[-1] - 2) // 2  # 2S + 1 + 2 pad - K + 1 = 2S
            x = filter2d(x, self.resample_filter, pad=[pad, pad, pad, pad], gain=4.0)
        else:
            x = F.conv2d(x, self.weight.to(x.dtype), padding=self.padding)
        x = x * dcoefs[:, :, None, None].to(x.dtype)
        if noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        elif noise_mode == "random":
            x = (
                x
                + torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
                * self.noise_strength
            )
        x = F.leaky_relu(x + self.bias[None, :, None, None].to(x.dtype), LRELU_SLOPE) * LRELU_GAIN
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class ToRGB(nn.Module):
    """Modulated 1x1 convolution to RGB, without demodulation: (N, C, S, S), w -> (N, 3, S, S)."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = F.conv2d(x * styles[:, :, None, None].to(x.dtype), self.weight.to(x.dtype))
        x = x + self.bias[None, :, None, None].to(x.dtype)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x


class SynthesisBlock(nn.Module):
    """One resolution: [const | conv0 (up 2x)], conv1, toRGB; adds its RGB to the upsampled image so far."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.in_channels = int(in_channels)
        self.resolution = int(resolution)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(
                in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp
            )
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.register_buffer("resample_filter", lowpass_filter(), persistent=False)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str = "const"
    ):
        """``ws`` (N, num_conv + 1, w_dim): this block's convolutions' w, then its toRGB's."""
        if self.in_channels == 0:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        rgb = self.torgb(x, ws[:, self.num_conv])
        img = rgb if img is None else upsample2d(img, self.resample_filter) + rgb
        return x, img


class SynthesisNetwork(nn.Module):
    """wp (N, num_ws, w_dim) -> images (N, img_channels, R, R), not clamped.

    Channels at side S: min(channel_base // S, channel_max).
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.channels = {res: min(channel_base // res, channel_max) for res in self.resolutions}
        self.num_ws = 0
        for res in self.resolutions:
            in_channels = self.channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, self.channels[res], w_dim, res, img_channels, conv_clamp)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last toRGB has a w of its own

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        x = img = None
        start = 0
        for block in self.blocks():
            x, img = block(x, img, ws[:, start : start + block.num_conv + 1], noise_mode)
            start += block.num_conv
        return img


def check_stylegan2_resolution(resolution: int) -> int:
    resolution = int(resolution)
    if resolution < 4 or resolution & (resolution - 1):
        raise TlganError(f"a StyleGAN2 resolution must be 4 * 2^k (4, 8, 16, ..., 1024), not {resolution}")
    return resolution


class StyleGAN2Generator(StyleBasedGenerator):
    """The StyleGAN2 generator, unconditional, as a tlgan :class:`Generator` with spaces z, w and wp.

    ``synthesize(latents, space)`` takes z (N, z_dim), w (N, w_dim) or wp (N, num_ws, w_dim) and
    returns images (N, 3, R, R) clamped to [-1, 1]. ``configure`` sets truncation and the noise
    mode (``"const"``, the stored noise buffers, by default: images are deterministic); see
    :mod:`tlgan.models.style_based`.
    """

    family = "StyleGAN2"
    noise_buffer = "noise_const"

    def __init__(
        self,
        z_dim: int = 512,
        w_dim: int = 512,
        img_resolution: int = 1024,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mapping_layers: int = 8,
        mapping_lr: float = 0.01,
        mapping_features: int | None = None,
        conv_clamp: float | None = None,
    ):
        super().__init__()
        img_resolution = check_stylegan2_resolution(img_resolution)
        for key, value in (
            ("z_dim", z_dim),
            ("w_dim", w_dim),
            ("channel_base", channel_base),
            ("channel_max", channel_max),
            ("mapping_layers", mapping_layers),
        ):
            if int(value) < 1:
                raise TlganError(f"{key} must be a positive integer, not {value}")
        if channel_base // img_resolution < 1:
            raise TlganError(
                f"channel_base {channel_base} gives no channels at {img_resolution} px; "
                f"it must be at least the resolution"
            )
        self.config_kwargs: dict[str, Any] = {
            "z_dim": int(z_dim),
            "w_dim": int(w_dim),
            "img_resolution": img_resolution,
            "img_channels": int(img_channels),
            "channel_base": int(channel_base),
            "channel_max": int(channel_max),
            "mapping_layers": int(mapping_layers),
            "mapping_lr": float(mapping_lr),
            "mapping_features": None if mapping_features is None else int(mapping_features),
            "conv_clamp": None if conv_clamp is None else float(conv_clamp),
        }
        self.name = "stylegan2"
        self.z_dim, self.w_dim = int(z_dim), int(w_dim)
        self.img_resolution, self.img_channels = img_resolution, int(img_channels)
        self.synthesis = SynthesisNetwork(
            self.w_dim, img_resolution, self.img_channels, int(channel_base), int(channel_max), conv_clamp
        )
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            self.z_dim, self.w_dim, int(mapping_layers), float(mapping_lr), mapping_features
        )
        self._init_style_options()

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    # -- for closed-form directions (SeFa) ---------------------------------------------------

    def conv_layers(self) -> list[SynthesisLayer]:
        """The modulated 3x3 convolutions in order; convolution k takes w number k of wp."""
        layers: list[SynthesisLayer] = []
        for block in self.synthesis.blocks():
            if block.in_channels:
                layers.append(block.conv0)
            layers.append(block.conv1)
        return layers

    def latent_weight(self, space: str = "w", layers: Sequence[int] | None = None) -> torch.Tensor:
        """The style affine weights (F, w_dim) of the convolutions that take wp layers ``layers``, stacked.

        SeFa's A for StyleGAN2: directions n that maximise ||A n|| change the styles most.
        ``layers`` None means every convolution (0 .. num_ws - 2; the last w feeds only toRGB).
        """
        if space not in ("w", "wp"):
            raise TlganError(f"StyleGAN2's style weights take w, not {space!r}; fit SeFa in w")
        convs = self.conv_layers()
        chosen = range(len(convs)) if layers is None else [int(k) for k in layers]
        bad = [k for k in chosen if not 0 <= k < len(convs)]
        if bad:
            raise TlganError(f"layer(s) {bad} have no convolution; this generator's are 0-{len(convs) - 1}")
        return torch.cat([convs[k].affine.effective_weight().detach() for k in chosen])


# ----------------------------------------------------------------------------------------
# The discriminator (used in training only; never registered as a model)
# ----------------------------------------------------------------------------------------


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution, optionally halving the side first (low-pass, then stride 2).

    (N, C_in, S, S) -> (N, C_out, S, S), or (N, C_out, S/2, S/2) with ``down``. The weight is
    stored as N(0, 1) and scaled by 1 / sqrt(fan_in) at run time, as in the generator.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        activation: str = "lrelu",
        down: bool = False,
        bias: bool = True,
    ):
        super().__init__()
        self.activation = activation
        self.down = bool(down)
        self.kernel_size = int(kernel_size)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.register_buffer("resample_filter", lowpass_filter(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight * self.weight_gain).to(x.dtype)
        b = None if self.bias is None else self.bias.to(x.dtype)
        if self.down:
            # Blur so that the stride-2 convolution does not alias: for a K-tap kernel k the
            # padding makes side S + k - 2 after blurring, which the stride-2 k x k conv halves.
            taps = self.resample_filter.shape[-1]
            total = self.kernel_size + taps - 3
            x = filter2d(x, self.resample_filter, pad=[total // 2, total - total // 2] * 2)
            x = F.conv2d(x, w, b, stride=2)
        else:
            x = F.conv2d(x, w, b, padding=self.kernel_size // 2)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
        return x


class DiscriminatorBlock(nn.Module):
    """Residual block at side S: (N, C, S, S) -> (N, C', S/2, S/2).

    x' = (skip(x) + conv1(conv0(x))) / sqrt(2), with conv0 3x3, conv1 3x3 down, and skip a
    1x1 down without bias or activation; the 1/sqrt(2) keeps the variance of the sum.
    The top block first maps the image to features with ``fromrgb`` (1x1).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int = 3,
        from_rgb: bool = False,
    ):
        super().__init__()
        self.resolution = int(resolution)
        self.from_rgb = bool(from_rgb)
        if from_rgb:
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1)
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, down=True)
        self.skip = Conv2dLayer(in_channels, out_channels, 1, activation="linear", down=True, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.from_rgb:
            x = self.fromrgb(x)
        y = self.skip(x)
        x = self.conv1(self.conv0(x))
        return (y + x) * math.sqrt(0.5)


def minibatch_std(x: torch.Tensor, group_size: int = 4, num_channels: int = 1) -> torch.Tensor:
    """(N, C, H, W) -> (N, C + num_channels, H, W): appends the standard deviation of each feature
    over groups of images, averaged over features and pixels, so D can see a lack of variety.

    Group g holds images g, g + N/G, g + 2N/G, ... with G the largest divisor of N up to
    ``group_size``.
    """
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    f = num_channels
    y = x.reshape(g, -1, f, c // f, h, w).float()
    y = (y - y.mean(dim=0)).square().mean(dim=0)
    y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (N / G, F)
    y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w).to(x.dtype)  # (N, F, H, W)
    return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """At 4 x 4: minibatch std, 3x3 conv, fully connected, then one logit: (N, C, 4, 4) -> (N,)."""

    def __init__(self, in_channels: int, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = int(group_size), int(num_channels)
        self.conv = Conv2dLayer(in_channels + self.num_channels, in_channels, 3)
        self.fc = FullyConnected(in_channels * 16, in_channels, "lrelu")
        self.out = FullyConnected(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_channels > 0:
            x = minibatch_std(x, self.group_size, self.num_channels)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1))).squeeze(1)


class StyleGAN2Discriminator(nn.Module):
    """The StyleGAN2 residual discriminator: images (N, 3, R, R) -> logits (N,) ("real" when high).

    Blocks ``b{R}``, ..., ``b8`` halve the side; channels at side S are
    min(channel_base // S, channel_max), as in the generator. ``mbstd_group`` 0 switches
    the minibatch standard deviation off.
    """

    def __init__(
        self,
        img_resolution: int = 64,
        img_channels: int = 3,
        channel_base: int = 32768,
        channel_max: int = 512,
        mbstd_group: int = 4,
        mbstd_channels: int = 1,
    ):
        super().__init__()
        img_resolution = check_stylegan2_resolution(img_resolution)
        if channel_base // img_resolution < 1:
            raise TlganError(
                f"channel_base {channel_base} gives no channels at {img_resolution} px; "
                f"it must be at least the resolution"
            )
        self.config_kwargs = {
            "img_resolution": img_resolution,
            "img_channels": int(img_channels),
            "channel_base": int(channel_base),
            "channel_max": int(channel_max),
            "mbstd_group": int(mbstd_group),
            "mbstd_channels": int(mbstd_channels),
        }
        self.img_resolution, self.img_channels = img_resolution, int(img_channels)
        self.resolutions = [2**i for i in range(int(math.log2(img_resolution)), 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.resolutions + [4]}
        for res in self.resolutions:
            block = DiscriminatorBlock(
                channels[res], channels[res // 2], res, self.img_channels, from_rgb=res == img_resolution
            )
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(channels[4], mbstd_group, mbstd_channels if mbstd_group > 0 else 0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != (
            self.img_channels,
            self.img_resolution,
            self.img_resolution,
        ):
            raise TlganError(
                f"the discriminator takes images (N, {self.img_channels}, {self.img_resolution}, "
                f"{self.img_resolution}); got {tuple(images.shape)}"
            )
        x = images
        for res in self.resolutions:
            x = getattr(self, f"b{res}")(x)
        return self.b4(x)
