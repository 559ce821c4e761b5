"""PatchGAN discriminator: one real/fake logit per overlapping image patch (pix2pix's critic).

Images (N, 3, R, R) in [-1, 1] go through ``depth`` strided 4x4 convolutions (each halves the
side; channels ``width``, 2 x width, ... at most 8 x width; LeakyReLU(0.2) between them) and a
last 3x3 convolution to one channel: a logit map (N, 1, R / 2**depth, R / 2**depth). Each logit
sees a square patch of ``receptive_field(depth)`` pixels (18 at depth 2, 38 at depth 3), so the
critic judges local texture and edges, not the whole face: paired with a pixel loss that fixes
the layout, it pays the generator for hard edges and clean flat regions. Spectral norm on every
layer bounds how fast the critic can change.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from tlgan.errors import TlganError
from tlgan.models.networks import check_resolution, check_width


def receptive_field(depth: int) -> int:
    """Side in pixels of the patch one logit of a depth-``depth`` PatchDiscriminator sees."""
    field = 3
    for _ in range(depth):
        field = 2 * field + 2
    return field


class PatchDiscriminator(nn.Module):
    """Images (N, 3, R, R) -> patch logits (N, 1, R / 2**depth, R / 2**depth); see the module doc.

    Raises TlganError for a resolution that is not a power of two from 8 up, a non-positive
    width, or a depth that leaves a map smaller than 2 x 2.
    """

    def __init__(self, resolution: int = 64, width: int = 32, depth: int = 3, spectral_norm: bool = True):
        super().__init__()
        resolution, width, depth = check_resolution(resolution), check_width(width), int(depth)
        if depth < 1 or resolution >> depth < 2:
            raise TlganError(
                f"a patch discriminator for {resolution} px images takes depth 1 to "
                f"{resolution.bit_length() - 2}, not {depth}"
            )
        self.config_kwargs = {
            "resolution": resolution,
            "width": width,
            "depth": depth,
            "spectral_norm": bool(spectral_norm),
        }
        self.img_resolution = resolution
        wrap = _spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        in_ch = 3
        for i in range(depth):
            out_ch = width * min(8, 2**i)
            layers += [wrap(nn.Conv2d(in_ch, out_ch, kernel_size=4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.to_logit = wrap(nn.Conv2d(in_ch, 1, kernel_size=3, padding=1))

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1:] != (3, self.img_resolution, self.img_resolution):
            raise TlganError(
                f"the patch discriminator takes images (N, 3, {self.img_resolution}, "
                f"{self.img_resolution}), got {tuple(images.shape)}"
            )
        return self.to_logit(self.features(images))
