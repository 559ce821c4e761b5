"""Pieces of StyleGAN2 training shared by the adversarial trainer and distillation.

- :func:`training_images`: z -> images through the mapping and the raw (unclamped) synthesis,
  tracking ``w_avg`` (the truncation centre) and, optionally, mixing styles: with probability
  ``mixing_prob`` an image takes a second latent's w from a random layer on (Karras et al.,
  2019), which keeps neighbouring layers' styles from depending on each other.
- :func:`path_length_penalty`: the path-length regulariser of StyleGAN2 (Sec. 3.2), lazy.
"""

from __future__ import annotations

import torch

from tlgan.models.base import Generator
from tlgan.models.stylegan2 import StyleGAN2Generator

W_AVG_BETA = 0.995

SMALL_ARCH = {"channel_base": 1024, "channel_max": 128, "w_dim": 256, "mapping_layers": 4}
"""The CLI's StyleGAN2 size for 64 px worlds: channels 128 at 4-8 px, 64 at 16, 32 at 32, 16 at
64 (1.2 M parameters, 5 MB in float32, about 60 M multiply-adds per image, within the bundled
DCGAN's budget of 0.1 G, because `tlgan demo` samples 20,000 faces on the CPU); the paper's
config F is ``channel_base`` 32768, ``channel_max`` 512, ``w_dim`` 512, ``mapping_layers`` 8."""


def is_stylegan2(G: Generator) -> bool:
    return isinstance(G, StyleGAN2Generator)


def training_wp(
    G: StyleGAN2Generator,
    z: torch.Tensor,
    *,
    track: bool = True,
    mixing_prob: float = 0.0,
    rng: torch.Generator | None = None,
    w_avg_beta: float = W_AVG_BETA,
) -> torch.Tensor:
    """z (N, z_dim) -> wp (N, num_ws, w_dim) for a training step, without truncation.

    ``track`` moves ``G.mapping.w_avg`` toward the batch mean of w. With ``mixing_prob`` > 0,
    ``rng`` (a CPU generator, for reproducibility) draws which images mix, their second z and
    the layer where the second w takes over.
    """
    w = G.mapping(z)
    if track:
        G.mapping.track_w_avg(w, w_avg_beta)
    wp = w[:, None, :].repeat(1, G.num_ws, 1)
    if mixing_prob > 0:
        if rng is None:
            raise ValueError(
                "style mixing needs rng, a torch.Generator, so that a step's draw is reproducible"
            )
        n = z.shape[0]
        z2 = torch.randn(n, G.z_dim, generator=rng).to(z.device, z.dtype)
        mix = torch.rand(n, generator=rng) < mixing_prob
        cut = torch.randint(1, G.num_ws, (n,), generator=rng)
        cut = torch.where(mix, cut, torch.full_like(cut, G.num_ws))  # num_ws: no layer takes w2
        w2 = G.mapping(z2)
        take = (torch.arange(G.num_ws)[None, :] >= cut[:, None]).to(z.device)  # (N, num_ws)
        wp = torch.where(take[:, :, None], w2[:, None, :], wp)
    return wp


def training_images(
    G: Generator, z: torch.Tensor, *, mixing_prob: float = 0.0, rng: torch.Generator | None = None
) -> torch.Tensor:
    """The generator's images (N, 3, R, R) for a loss. A StyleGAN2's come before the final clamp,
    whose zero gradient would leave pixels stuck outside [-1, 1], and update its ``w_avg`` when
    it is in training mode (see :func:`training_wp` for ``mixing_prob`` and ``rng``)."""
    if is_stylegan2(G):
        return G.synthesis(
            training_wp(G, z, track=G.training, mixing_prob=mixing_prob, rng=rng), G.noise_mode
        )
    return G.synthesize(z)


def path_length_penalty(
    G: StyleGAN2Generator, wp: torch.Tensor, pl_mean: torch.Tensor, noise: torch.Tensor, decay: float = 0.01
) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2's path-length penalty on wp (N, num_ws, w_dim) (requires grad).

    The Jacobian-vector product J^T y with y = ``noise`` (N, 3, R, R) / R (a random image
    direction, drawn by the caller for reproducibility) has length a = |J^T y| per image; the
    penalty is mean (a - pl_mean)^2 where pl_mean is a running mean of a (updated here in
    place with ``decay``). Returns (penalty, lengths (N,)).
    """
    images = G.synthesis(wp, G.noise_mode)
    r = images.shape[-1] * images.shape[-2]
    (grad,) = torch.autograd.grad((images * noise / r**0.5).sum(), wp, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
    with torch.no_grad():
        pl_mean.copy_(pl_mean.lerp(lengths.mean().to(pl_mean.dtype), decay))
    return (lengths - pl_mean).square().mean(), lengths
