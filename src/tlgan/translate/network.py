"""The image-to-image network of InterFaceGAN's second editing route, and blending two of them.

:class:`TranslationNet` is a small encoder-decoder with skip connections (a U-Net) that works
at the generator's resolution and predicts a *change* of the image: ``out = clamp(x + h(x))``.
The residual form keeps everything the network does not touch (background, accessories, the
photo's own detail) exactly, which is the point of this route.

Continuous control follows the paper: one network is trained as the identity, a copy of it is
fine-tuned to the attribute's translation, and an amount ``a`` in [0, 1] is applied by
interpolating their weights, ``(1 - a) * identity + a * edited`` (:func:`blend`). Both networks
have the same architecture and no normalisation statistics, so every state entry blends.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tlgan.errors import TlganError
from tlgan.models.networks import check_resolution, check_width


def _channels(width: int, level: int) -> int:
    """Channels at ``level`` (0 = full resolution): ``width`` doubling per level, at most 8 x width."""
    return width * min(8, 2**level)


class TranslationNet(nn.Module):
    """U-Net image translator: (N, 3, R, R) in [-1, 1] -> (N, 3, R, R) in [-1, 1].

    ``depth`` stride-2 convolutions take the image from R down to R / 2**depth; each level's
    features are concatenated back on the way up (nearest upsampling, then 3 x 3 convolutions).
    The last convolution predicts the change added to the input. At 64 px, width 32 and depth 3
    it has about 0.6 M parameters and costs about 0.15 GMAC per image.
    """

    def __init__(self, resolution: int = 64, width: int = 32, depth: int = 3):
        super().__init__()
        resolution, width = check_resolution(resolution), check_width(width)
        depth = int(depth)
        if depth < 1 or resolution >> depth < 4:
            raise TlganError(
                f"depth must be at least 1 and leave a 4 x 4 map at the bottom: at {resolution} px "
                f"it can be at most {max(1, resolution.bit_length() - 3)}, not {depth}"
            )
        self.config_kwargs = {"resolution": resolution, "width": width, "depth": depth}
        self.name = "translation"
        self.resolution = resolution
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.down = nn.ModuleList(
            nn.Conv2d(_channels(width, i), _channels(width, i + 1), 4, stride=2, padding=1)
            for i in range(depth)
        )
        bottom = _channels(width, depth)
        self.middle = nn.Conv2d(bottom, bottom, 3, padding=1)
        self.up = nn.ModuleList(
            nn.Conv2d(_channels(width, i + 1) + _channels(width, i), _channels(width, i), 3, padding=1)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (self.resolution,) * 2:
            raise TlganError(
                f"this translation network works on (N, 3, {self.resolution}, {self.resolution}) "
                f"images; got shape {tuple(images.shape)}"
            )
        x = F.leaky_relu(self.stem(images), 0.2)
        skips = [x]
        for conv in self.down:
            x = F.leaky_relu(conv(x), 0.2)
            skips.append(x)
        x = F.leaky_relu(self.middle(x), 0.2)
        skips.pop()
        for conv in self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = F.leaky_relu(conv(torch.cat([x, skips.pop()], dim=1)), 0.2)
        return (images + self.head(x)).clamp(-1.0, 1.0)


def blend(identity: nn.Module, edited: nn.Module, amount: float) -> dict[str, torch.Tensor]:
    """The state ``(1 - amount) * identity + amount * edited``, entry by entry.

    ``amount`` 0 gives the identity network's tensors exactly and 1 the edited network's
    (no rounding: the blend is skipped at the ends); other amounts interpolate, and amounts
    outside [0, 1] extrapolate along the same line.
    """
    a = float(amount)
    left, right = identity.state_dict(), edited.state_dict()
    if left.keys() != right.keys():
        raise TlganError("the identity and edited networks have different layers; they cannot be blended")
    if a == 0.0:
        return dict(left)
    if a == 1.0:
        return dict(right)
    return {k: torch.lerp(left[k], right[k], a) if left[k].is_floating_point() else left[k] for k in left}


def apply_blend(identity: nn.Module, edited: nn.Module, amount: float, images: torch.Tensor) -> torch.Tensor:
    """Images through the network whose weights are :func:`blend` of the two at ``amount``."""
    return torch.func.functional_call(identity, blend(identity, edited, amount), (images,))
