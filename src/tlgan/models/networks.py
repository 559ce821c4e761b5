"""The small networks tlgan trains itself: a DCGAN generator and discriminator, and a CNN
attribute classifier (StyleGAN2 has its own file, :mod:`tlgan.models.stylegan2`).

Every class keeps its constructor arguments in ``config_kwargs`` so that
:func:`~tlgan.models.formats.folder.save_pretrained` can write them and ``load_pretrained``
can rebuild the module before loading its weights. Resolutions are powers of two from 8 up; feature maps always
start (generator) or end (discriminator, classifier) at 4 x 4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from tlgan.errors import TlganError
from tlgan.models.base import Classifier, Generator

# The folder format (model.json + model.safetensors) lives with the other formats; it is
# re-exported here because the training commands save these networks with it.
from tlgan.models.formats.folder import load_pretrained, save_pretrained  # noqa: F401


def check_resolution(resolution: int) -> int:
    resolution = int(resolution)
    if resolution < 8 or resolution & (resolution - 1):
        raise TlganError(
            f"resolution must be a power of two from 8 up (8, 16, 32, 64, 128, ...), not {resolution}"
        )
    return resolution


def check_width(width: int) -> int:
    width = int(width)
    if width < 1:
        raise TlganError(f"width must be a positive number of channels, not {width}")
    return width


def _channels(width: int, resolution: int, size: int) -> int:
    """Channels of a feature map of side ``size`` in a network for ``resolution`` px images.

    ``width`` at half the image side, doubling each time the side halves, at most 8 x width.
    """
    return width * min(8, max(1, resolution // (2 * size)))


# ----------------------------------------------------------------------------------------
# Generator
# ----------------------------------------------------------------------------------------


class UpBlock(nn.Module):
    """(N, C_in, S, S) -> (N, C_out, 2S, 2S): transposed conv 4x4 stride 2, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(
            in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False
        )
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class ResizeConvBlock(nn.Module):
    """(N, C_in, S, S) -> (N, C_out, 2S, 2S): nearest-neighbour upsampling, conv 3x3, BatchNorm, ReLU.

    Every output pixel sees the same number of weights, so there is none of the checkerboard that
    the uneven overlap of a stride-2 transposed conv leaves.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.norm(self.conv(x)))


UPSAMPLING = ("transpose", "nearest")


class DCGANGenerator(Generator):
    """DCGAN generator: z (N, z_dim) -> images (N, 3, R, R) in [-1, 1].

    A linear layer maps z to a 4 x 4 feature map with 8 x ``width`` channels (at 64 px);
    each block doubles the side and halves the channels. ``upsample="transpose"`` (DCGAN's
    own, and the bundled ``toyfaces-gan``'s): :class:`UpBlock` s and a last transposed conv
    to RGB; about 0.03 GMAC per 64 px image at width 32 (0.07 at width 48).
    ``upsample="nearest"``: :class:`ResizeConvBlock` s up to the full side, then a 3x3 conv
    to RGB; about 0.1 GMAC at width 32. Tanh bounds the output. BatchNorm uses running
    statistics in eval mode, so an image depends only on its own latent.

    Raises TlganError for a resolution that is not a power of two from 8, a width or z_dim
    below 1, or an unknown ``upsample``.
    """

    def __init__(self, z_dim: int = 512, resolution: int = 64, width: int = 64, upsample: str = "transpose"):
        super().__init__()
        resolution, width = check_resolution(resolution), check_width(width)
        if int(z_dim) < 1:
            raise TlganError(f"z_dim must be positive, not {z_dim}")
        if upsample not in UPSAMPLING:
            raise TlganError(f"upsample must be one of {', '.join(UPSAMPLING)}, not {upsample!r}")
        self.config_kwargs = {"z_dim": int(z_dim), "resolution": resolution, "width": width}
        if upsample != "transpose":
            # Recorded only when it differs, so the model.json of a transposed-conv DCGAN is
            # what it was before the option existed.
            self.config_kwargs["upsample"] = upsample
        self.upsample = upsample
        self.name = "dcgan"
        self.z_dim = int(z_dim)
        self.img_resolution = resolution

        self.stem_channels = _channels(width, resolution, 4)
        self.project = nn.Linear(self.z_dim, self.stem_channels * 16, bias=False)
        self.stem_norm = nn.BatchNorm2d(self.stem_channels)
        block = UpBlock if upsample == "transpose" else ResizeConvBlock
        # A transposed conv to RGB makes the last doubling; resize-convs go up to the full side.
        last = resolution // 2 if upsample == "transpose" else resolution
        blocks, size = [], 4
        while size < last:
            blocks.append(block(_channels(width, resolution, size), _channels(width, resolution, 2 * size)))
            size *= 2
        self.blocks = nn.Sequential(*blocks)
        if upsample == "transpose":
            self.to_rgb = nn.ConvTranspose2d(
                _channels(width, resolution, size), 3, kernel_size=4, stride=2, padding=1
            )
        else:
            self.to_rgb = nn.Conv2d(_channels(width, resolution, size), 3, kernel_size=3, padding=1)
        # GANSpace reads an early layer after a non-linearity: the first block's output.
        self.feature_layer = "blocks.0" if blocks else None

    def _synthesize(self, latents: torch.Tensor, space: str) -> torch.Tensor:
        x = self.project(latents).view(-1, self.stem_channels, 4, 4)
        x = F.relu(self.stem_norm(x))
        x = self.blocks(x)
        return torch.tanh(self.to_rgb(x))


# ----------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: images (N, 3, R, R) in [-1, 1] -> one real/fake logit each, (N,).

    Strided 4x4 convs halve the side down to 4 x 4 (channels doubling from ``width`` to at
    most 8 x ``width``), LeakyReLU(0.2) between them, and a last 4x4 conv gives the logit.
    With ``spectral_norm`` every layer's weight is divided by its largest singular value,
    which bounds how fast the discriminator can change and keeps GAN training stable
    without batch statistics.
    """

    def __init__(self, resolution: int = 64, width: int = 64, spectral_norm: bool = True):
        super().__init__()
        resolution, width = check_resolution(resolution), check_width(width)
        self.config_kwargs = {"resolution": resolution, "width": width, "spectral_norm": bool(spectral_norm)}
        self.img_resolution = resolution
        wrap = _spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        in_ch, size = 3, resolution
        while size > 4:
            out_ch = _channels(width, resolution, size // 2)
            layers += [wrap(nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            in_ch, size = out_ch, size // 2
        self.features = nn.Sequential(*layers)
        self.to_logit = wrap(nn.Conv2d(in_ch, 1, kernel_size=4))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.to_logit(self.features(images)).view(-1)


# ----------------------------------------------------------------------------------------
# Attribute classifier
# ----------------------------------------------------------------------------------------


class DownBlock(nn.Module):
    """(N, C_in, S, S) -> (N, C_out, S/2, S/2): conv 3x3, BN, ReLU, then a stride-2 conv 3x3, BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(x)))


class AttributeClassifierNet(Classifier):
    """Small CNN: images (N, 3, R, R) in [-1, 1] -> attribute logits (N, A).

    :class:`DownBlock` s halve the side down to 4 x 4 with ``width``, 2 x width, ...
    channels (at most 8 x width); global average pooling gives the embedding (N, F) and a
    linear layer the logits. About 0.1 GMAC per 64 px image at width 32. Inputs of another
    size are resized to ``resolution`` first.
    """

    def __init__(self, attributes: Sequence[str], resolution: int = 64, width: int = 32):
        super().__init__()
        resolution, width = check_resolution(resolution), check_width(width)
        attributes = [str(a) for a in attributes]
        if not attributes:
            raise TlganError("a classifier needs at least one attribute name")
        self.config_kwargs = {"attributes": list(attributes), "resolution": resolution, "width": width}
        self.name = "attribute-classifier"
        self.attributes = tuple(attributes)
        self.input_resolution = resolution
        blocks, in_ch = [], 3
        for i in range(int(math.log2(resolution)) - 2):
            out_ch = width * min(8, 2**i)
            blocks.append(DownBlock(in_ch, out_ch))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.embedding_dim = in_ch
        self.head = nn.Linear(in_ch, len(attributes))

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise TlganError(f"images must be (N, 3, H, W); got shape {tuple(images.shape)}")
        if images.shape[-2:] != (self.input_resolution, self.input_resolution):
            images = F.interpolate(
                images,
                size=(self.input_resolution,) * 2,
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
        return images

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Activations after each block: [(N, width, R/2, R/2), (N, 2 width, R/4, R/4), ..., (N, F, 4, 4)]."""
        return self._features(self._prepare(images))

    def embedding(self, images: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled last-block features (N, F), the input of the linear head."""
        return self._features(self._prepare(images))[-1].mean(dim=(2, 3))

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self._features(images)[-1].mean(dim=(2, 3)))


def count_macs(module: nn.Module, inputs: torch.Tensor) -> int:
    """Multiply-accumulates per sample of one forward pass through ``module`` (conv and linear layers only)."""
    total = [0]

    def hook(layer, args, output):
        x = args[0]
        if isinstance(layer, nn.ConvTranspose2d):
            total[0] += (
                x[0].numel()
                * layer.out_channels
                * layer.kernel_size[0]
                * layer.kernel_size[1]
                // layer.groups
            )
        elif isinstance(layer, nn.Conv2d):
            k = layer.kernel_size[0] * layer.kernel_size[1] * layer.in_channels // layer.groups
            total[0] += output[0].numel() * k
        elif isinstance(layer, nn.Linear):
            total[0] += layer.in_features * layer.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in module.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))
    ]
    was_training = module.training
    module.eval()  # so BatchNorm statistics are not touched
    try:
        with torch.no_grad():
            module(inputs[:1])
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return total[0]
