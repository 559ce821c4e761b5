"""``toyfaces-render``: the analytic generator of the toyfaces world, with its true axes."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.models.base import Generator
from tlgan.registry import unknown_name_message
from tlgan.toyfaces import world
from tlgan.toyfaces.render import render


class ToyfacesRenderer(Generator):
    """z (N, 512) -> ``render(factors(z))``, (N, 3, 64, 64) in [-1, 1]; differentiable in z.

    It has no weights; ``supersample`` sets the anti-aliasing of the drawing (2 by default).
    """

    name = "toyfaces-render"
    z_dim = world.Z_DIM
    img_resolution = 64
    spaces = ("z",)

    def __init__(self, img_resolution: int = 64, supersample: int = 2):
        super().__init__()
        self.img_resolution = int(img_resolution)
        self.supersample = int(supersample)
        # A zero-size buffer so that .to(device) moves the generator and synthesize() follows it.
        self.register_buffer("_device_anchor", torch.zeros(0), persistent=False)

    def _synthesize(self, latents: torch.Tensor, space: str) -> torch.Tensor:
        return render(world.factors(latents), resolution=self.img_resolution, supersample=self.supersample)

    def latent_weight(self, space: str = "z", layers=None) -> torch.Tensor:
        raise TlganError(
            "toyfaces-render is an analytic renderer with no weights, so it has no first-layer weight "
            "for sefa to factorise; use the pca finder, or sefa on a trained generator such as "
            "toyfaces-gan"
        )

    def labels(self, z: torch.Tensor) -> torch.Tensor:
        """Ground-truth labels (N, 17) bool, columns in :data:`tlgan.toyfaces.world.ATTRIBUTES` order."""
        return world.labels(self.check_latents(z))

    def latent_scores(self, z: torch.Tensor) -> torch.Tensor:
        """Ground-truth latent scores (N, 17); the label is score > 0."""
        return world.latent_scores(self.check_latents(z))

    def factors(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """The continuous factors the renderer draws (see :func:`tlgan.toyfaces.world.factors`)."""
        return world.factors(self.check_latents(z))

    @property
    def attributes(self) -> tuple:
        return world.ATTRIBUTES

    def true_axes(self, attributes: Sequence[str] | None = None, space: str = "z") -> FeatureAxes:
        """The exact attribute directions w_a as a FeatureAxes (method "truth")."""
        self.check_space(space)
        names = list(world.ATTRIBUTES) if attributes is None else list(attributes)
        for name in names:
            if name not in world.ATTRIBUTES:
                raise TlganError(unknown_name_message("toyfaces attribute", name, list(world.ATTRIBUTES)))
        rows = [world.ATTRIBUTES.index(a) for a in names]
        bias = world.biases()
        return FeatureAxes(
            world.true_directions()[rows],
            names,
            space=space,
            generator=self.name,
            method="truth",
            info={
                "bias": {a: float(bias[i]) for a, i in zip(names, rows, strict=True)},
                "basis_seed": world.BASIS_SEED,
            },
        )
