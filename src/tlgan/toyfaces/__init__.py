"""The toyfaces world: procedural 64 px cartoon faces whose 17 attributes are known linear
functions of the latent, so every axis-finding method can be scored against the truth.

- :mod:`~tlgan.toyfaces.world`: attributes, true directions, latent scores, factors;
- :mod:`~tlgan.toyfaces.render`: factors -> images (``render.render``; torch, vectorised, differentiable);
- :mod:`~tlgan.toyfaces.generator`: the ``toyfaces-render`` generator;
- :mod:`~tlgan.toyfaces.style`: the ``toyfaces-style`` generator (z -> w -> wp, attributes linear in
  w, layer groups in wp) over :mod:`~tlgan.toyfaces.mapping`'s seeded mapping network;
- :mod:`~tlgan.toyfaces.style_eval`: how linear z is, and every finder against the truth in z and w;
- :mod:`~tlgan.toyfaces.export`: a data set in CelebA's file layout.
"""

from tlgan.toyfaces.render import render_speed
from tlgan.toyfaces.world import (
    ATTRIBUTES,
    FACTOR_NAMES,
    FACTOR_OF,
    NUISANCES,
    factors,
    labels,
    latent_scores,
    true_directions,
)

__all__ = [
    "ATTRIBUTES",
    "FACTOR_NAMES",
    "FACTOR_OF",
    "NUISANCES",
    "factors",
    "labels",
    "latent_scores",
    "true_directions",
    "render_speed",
]
