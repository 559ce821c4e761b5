"""Progressive GAN (Karras et al., 2018, "Progressive Growing of GANs for Improved Quality, Stability,
and Variation"): the generator TL-GAN found its axes in and InterFaceGAN published boundaries for,
in one file to read top to bottom.

    z (N, z_dim) --pixel norm--> 4x4: dense, conv --> 8x8 ... R x R: up, conv, conv --> toRGB --> image

- **Equalised learning rate**: weights are stored at unit scale and multiplied at run time by
  He's constant gain / sqrt(fan_in) (:class:`WScale`, which also adds the bias). The gain is
  sqrt(2) for the leaky-ReLU layers (slope 0.2, no output gain) and 1 for toRGB.
- **Pixel norm**: z, and every activation after its leaky ReLU, is divided by the root mean
  square over its channels at each pixel (epsilon 1e-8).
- **4x4**: a fully connected layer from z to nf(1) x 4 x 4 units (gain sqrt(2)/4 on fan-in z_dim,
  i.e. sqrt(2) / sqrt(16 z_dim)), then a 3x3 convolution. The dense layer is stored as a 4x4
  convolution over z seen as a 1x1 image padded by 3 (so its kernel is the dense weight
  reshaped and flipped), as InterFaceGAN's conversion stores it.
- **8x8 and up**: nearest-neighbour upsampling then a 3x3 convolution, or with ``fused_scale``
  one stride-2 transposed convolution whose 4x4 kernel is the 3x3 kernel summed over its four
  2x2 shifts (the same operation as upsampling and convolving with that kernel rotated by 180
  degrees, cheaper); then a second 3x3 convolution.
- **toRGB**: a 1x1 convolution per level. A fully grown network (``lod`` 0) uses the last one.
  A snapshot taken while growing (``lod`` > 0) blends the two coarsest levels still growing
  and upsamples, as the original's "linear" structure does.
- Channels at side 2^r: nf(r - 1) = min(fmap_base // 2^(r - 1), fmap_max).

Parameter names follow InterFaceGAN's PyTorch conversion (``layer0.conv.weight``,
``layer0.wscale.bias``, ..., ``output{k}.conv.weight``, ``lod``; a fused layer's kernel is
``layer{i}.weight`` in TensorFlow's (3, 3, in, out) layout), so those ``.pth`` files load without
renaming; the TensorFlow pickles map onto them (:mod:`tlgan.models.formats.tf_pickle`).

**z convention** (InterFaceGAN's, so its published PGGAN boundaries apply): latents live on the
sphere of radius sqrt(z_dim). ``sample_latents`` draws them there, and ``synthesize`` rescales
any z to that norm first (the pixel norm of z makes the image independent of its scale, so an
edited z off the sphere renders as its projection, as in InterFaceGAN).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tlgan.errors import TlganError
from tlgan.models.base import Generator

LRELU_SLOPE = 0.2
PIXEL_NORM_EPS = 1e-8


def pixel_norm(x: torch.Tensor, eps: float = PIXEL_NORM_EPS) -> torch.Tensor:
    """Divide each pixel's feature vector by its root mean square: (N, C, ...) -> same shape."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def upscale2d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Nearest-neighbour upsampling: (N, C, H, W) -> (N, C, H * factor, W * factor)."""
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="nearest")


def fused_upsample_kernel(weight: torch.Tensor) -> torch.Tensor:
    """A (K, K, C_in, C_out) kernel -> the (C_in, C_out, K + 1, K + 1) stride-2 transposed-convolution kernel.

    A transposed convolution (stride 2, padding 1) with the kernel summed over its four one-pixel
    shifts equals nearest upsampling then a KxK convolution with the kernel rotated by 180 degrees
    (a transposed convolution correlates with the flipped kernel).
    """
    w = F.pad(weight, [0, 0, 0, 0, 1, 1, 1, 1])
    w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]
    return w.permute(2, 3, 0, 1)


def grown_images(
    x: torch.Tensor, blocks: Sequence[Callable], to_rgbs: Sequence[Callable], lod: float
) -> torch.Tensor:
    """Run the levels of a progressively grown generator and make its image at level of detail ``lod``.

    ``blocks[k]`` maps level k-1's features to level k's (k = 0 is 4x4), ``to_rgbs[k]`` level k's
    features to an image. ``lod`` 0 is the finest level's image; lod = n + f (0 <= f < 1) takes
    the level n steps coarser, blended by f with the next coarser one upsampled, and upsamples
    the result to full size (TensorFlow's ``lerp_clip`` over levels in the original).
    """
    levels = len(blocks)
    lod = min(max(float(lod), 0.0), levels - 1.0)
    finest = levels - 1 - int(math.floor(lod))
    blend = lod - math.floor(lod)
    coarser = None
    for level in range(finest + 1):
        coarser, x = x, blocks[level](x)
    images = to_rgbs[finest](x)
    if blend > 0.0:
        images = torch.lerp(images, upscale2d(to_rgbs[finest - 1](coarser)), blend)
    return upscale2d(images, 2 ** (levels - 1 - finest))


def nf(stage: int, fmap_base: int, fmap_max: int) -> int:
    """Feature maps at side 2^(stage + 1): min(fmap_base // 2^stage, fmap_max)."""
    return min(int(fmap_base // 2**stage), int(fmap_max))


def check_progressive_resolution(resolution: int, fmap_base: int, fmap_max: int, what: str) -> int:
    resolution = int(resolution)
    if resolution < 4 or resolution & (resolution - 1):
        raise TlganError(f"a {what} resolution must be 4 * 2^k (4, 8, ..., 1024), not {resolution}")
    if int(fmap_max) < 1 or nf(int(math.log2(resolution)) - 1, fmap_base, fmap_max) < 1:
        raise TlganError(
            f"fmap_base {fmap_base} / fmap_max {fmap_max} give no feature maps at {resolution} px; "
            f"fmap_base must be at least half the resolution"
        )
    return resolution


class WScale(nn.Module):
    """The run-time weight scale of the equalised learning rate, and the bias: x * gain / sqrt(fan_in) + b."""

    def __init__(self, fan_in: int, channels: int, gain: float = math.sqrt(2.0)):
        super().__init__()
        self.scale = gain / math.sqrt(fan_in)
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.bias.view(1, -1, *([1] * (x.ndim - 2)))


class PGGANLayer(nn.Module):
    """[upsample 2x], convolution, weight scale + bias, then leaky ReLU and pixel norm (or linear, for toRGB).

    (N, C_in, S, S) -> (N, C_out, S', S'): S' = 2S when ``upsample`` is "nearest" or "fused", S + 2
    padding - kernel + 1 otherwise (the 4x4 dense layer: S = 1, kernel 4, padding 3).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        upsample: str = "none",
        gain: float = math.sqrt(2.0),
        linear: bool = False,
    ):
        super().__init__()
        self.upsample = upsample
        self.linear = linear
        if upsample == "fused":
            self.weight = nn.Parameter(torch.randn(kernel_size, kernel_size, in_channels, out_channels))
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.wscale = WScale(in_channels * kernel_size * kernel_size, out_channels, gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample == "fused":
            x = F.conv_transpose2d(x, fused_upsample_kernel(self.weight), stride=2, padding=1)
        else:
            if self.upsample == "nearest":
                x = upscale2d(x)
            x = self.conv(x)
        x = self.wscale(x)
        if self.linear:
            return x
        return pixel_norm(F.leaky_relu(x, LRELU_SLOPE))

    def effective_weight(self) -> torch.Tensor:
        """The weight as applied, (C_out, C_in, K, K) in convolution layout, scale included."""
        weight = self.weight.permute(3, 2, 0, 1) if self.upsample == "fused" else self.conv.weight
        return weight * self.wscale.scale


class PGGANGenerator(Generator):
    """The progressive GAN generator as a tlgan :class:`Generator` with the one space z.

    ``synthesize(z)`` takes (N, z_dim) and returns images (N, 3, R, R) clamped to [-1, 1];
    :meth:`synthesis` gives them unclamped. Layers: ``layer{2k}``, ``layer{2k+1}`` and
    ``output{k}`` (toRGB) at side 4 * 2^k.
    """

    spaces = ("z",)

    def __init__(
        self,
        z_dim: int = 512,
        img_resolution: int = 1024,
        img_channels: int = 3,
        fmap_base: int = 8192,
        fmap_max: int = 512,
        fused_scale: bool = False,
    ):
        super().__init__()
        img_resolution = check_progressive_resolution(img_resolution, fmap_base, fmap_max, "PGGAN")
        if int(z_dim) < 1:
            raise TlganError(f"z_dim must be a positive integer, not {z_dim}")
        self.config_kwargs: dict[str, Any] = {
            "z_dim": int(z_dim),
            "img_resolution": img_resolution,
            "img_channels": int(img_channels),
            "fmap_base": int(fmap_base),
            "fmap_max": int(fmap_max),
            "fused_scale": bool(fused_scale),
        }
        self.name = "pggan"
        self.z_dim, self.img_resolution, self.img_channels = int(z_dim), img_resolution, int(img_channels)
        self.num_levels = int(math.log2(img_resolution)) - 1
        self.channels = [nf(level + 1, fmap_base, fmap_max) for level in range(self.num_levels)]
        for level, channels in enumerate(self.channels):
            if level == 0:
                # The dense layer from z; sqrt(2)/4 on fan-in z_dim is sqrt(2) on fan-in 16 z_dim.
                first = PGGANLayer(self.z_dim, channels, kernel_size=4, padding=3)
            else:
                first = PGGANLayer(
                    self.channels[level - 1], channels, upsample="fused" if fused_scale else "nearest"
                )
            setattr(self, f"layer{2 * level}", first)
            setattr(self, f"layer{2 * level + 1}", PGGANLayer(channels, channels))
            setattr(
                self,
                f"output{level}",
                PGGANLayer(channels, self.img_channels, kernel_size=1, padding=0, gain=1.0, linear=True),
            )
        self.register_buffer("lod", torch.zeros(()))

    def _block(self, level: int) -> Callable[[torch.Tensor], torch.Tensor]:
        first, second = getattr(self, f"layer{2 * level}"), getattr(self, f"layer{2 * level + 1}")
        return lambda x: second(first(x))

    def normalize_z(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, z_dim) rescaled to norm sqrt(z_dim), InterFaceGAN's PGGAN convention."""
        return z * (math.sqrt(self.z_dim) / z.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def synthesis(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, z_dim) -> unclamped images (N, img_channels, R, R)."""
        x = pixel_norm(self.normalize_z(z))[:, :, None, None]
        blocks = [self._block(level) for level in range(self.num_levels)]
        to_rgbs = [getattr(self, f"output{level}") for level in range(self.num_levels)]
        return grown_images(x, blocks, to_rgbs, float(self.lod))

    def _synthesize(self, latents: torch.Tensor, space: str) -> torch.Tensor:
        return self.synthesis(latents).clamp(-1.0, 1.0)

    def sample_latents_at(self, indices, seed: int = 0, space: str = "z") -> torch.Tensor:
        """Latents of samples ``indices`` of ``seed``: standard normal draws rescaled to norm sqrt(z_dim)."""
        return self.normalize_z(super().sample_latents_at(indices, seed=seed, space=space))

    def latent_weight(self, space: str = "z", layers: Sequence[int] | None = None) -> torch.Tensor:
        """The dense layer's weight on z, (16 nf(1), z_dim), scale included: SeFa's A for PGGAN.

        Row c * 16 + 4 i + j gives output channel c at pixel (i, j) of the 4x4 map (TensorFlow's
        dense layout): its pre-activation is ``pixel_norm(z) @ A.T`` plus the bias.

        Only the first layer takes the latent, so ``layers`` may be None or [0].
        """
        self.check_space(space)
        if layers is not None and [int(k) for k in layers] != [0]:
            raise TlganError(
                f"PGGAN feeds z to its first layer only; layers must be [0] (or none), not {list(layers)}"
            )
        # Convolving a 1x1 z padded by 3 flips the kernel: output pixel (i, j) uses tap (3 - i, 3 - j).
        weight = self.layer0.effective_weight().detach().flip(2, 3)  # (C, z_dim, 4, 4)
        return weight.permute(0, 2, 3, 1).reshape(-1, self.z_dim)
