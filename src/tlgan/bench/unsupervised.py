"""Unsupervised finders' speed: pca against scikit-learn's PCA, sefa on the bundled generator.

* pca: :class:`~tlgan.axes.finders.PCAFinder` (latent source) on ``n`` x ``d`` latents with a planted
  low-rank covariance (the shape of StyleGAN's w) against ``sklearn.decomposition.PCA`` with the
  same number of components, timed interleaved, best of ``repeats``; the cosine of the top
  components of the two says they agree.
* sefa: :class:`~tlgan.axes.finders.SeFaFinder` on the bundled ``toyfaces-gan`` (its 4,096 x 512
  first layer) and on a StyleGAN2-sized stack of style weights (``style_rows`` x 512, random),
  against one ``numpy.linalg.svd`` of the same matrix (the closed form's textbook route); ``quick``
  times the small random stack only.
"""

from __future__ import annotations

import logging
from functools import partial

import numpy as np
import torch

from tlgan.axes.finders import PCAFinder, SeFaFinder
from tlgan.bench.fitting import _best_of, _cosines, _threads
from tlgan.errors import TlganError
from tlgan.models.base import Generator

log = logging.getLogger(__name__)


class _WeightOnly(Generator):
    """A stand-in generator that only has a latent weight (for timing sefa on a given matrix)."""

    name = "weight-only"

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = weight
        self.z_dim = int(weight.shape[1])

    def latent_weight(self, space: str = "z", layers=None) -> torch.Tensor:
        return self.weight


def planted_w(n: int, d: int, rank: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, d) float32 latents: a rank-``rank`` part with decaying scales plus isotropic noise, offset."""
    g = torch.Generator().manual_seed(int(seed))
    basis = torch.linalg.qr(torch.randn(d, rank, generator=g))[0].T
    scales = torch.linspace(4.0, 1.0, rank)
    return (torch.randn(n, rank, generator=g) * scales) @ basis + 0.3 * torch.randn(n, d, generator=g) + 1.0


def bench_unsupervised(
    n: int = 100_000,
    d: int = 512,
    n_components: int = 64,
    style_rows: int = 9_088,
    repeats: int = 2,
    quick: bool = False,
    threads: int | None = None,
) -> dict[str, float]:
    """Time pca and sefa; returns a flat dict of figures (seconds, ratios, agreement)."""
    try:
        from sklearn.decomposition import PCA
    except ImportError:
        raise TlganError(
            "the unsupervised benchmark compares against scikit-learn; install it with "
            "`pip install scikit-learn` (or the project's [bench] extra)"
        ) from None
    if quick:
        n, d, n_components, style_rows, repeats = 5000, 64, 8, 512, 1
    with _threads(threads):
        w = planted_w(n, d)
        w_np = w.numpy()
        fits: dict[str, object] = {}

        def ours():
            fits["pca"] = PCAFinder(n_components=n_components).fit(w)

        def sklearn_pca():
            fits["sk"] = PCA(n_components=n_components, svd_solver="covariance_eigh").fit(w_np)

        log.info("bench unsupervised: pca on %d x %d", n, d)
        pca_s, sk_s = _best_of(repeats, ours, sklearn_pca)
        top = min(8, n_components)
        agree = np.abs(_cosines(fits["pca"].axes_[:top].numpy(), fits["sk"].components_[:top]))
        result: dict[str, float] = {
            "pca_n": n,
            "pca_d": d,
            "pca_components": n_components,
            "pca_threads": torch.get_num_threads(),
            "pca_seconds": round(pca_s, 4),
            "pca_sklearn_seconds": round(sk_s, 4),
            "pca_speedup_vs_sklearn": round(sk_s / pca_s, 2),
            "pca_cosine_vs_sklearn_top8_min": float(agree.min()),
        }

        from tlgan.models import load_generator

        weights = {} if quick else {"toyfaces_gan": load_generator("toyfaces-gan").latent_weight("z")}
        weights["style_stack"] = torch.randn(style_rows, d, generator=torch.Generator().manual_seed(1))
        for label, weight in weights.items():
            k = min(n_components, weight.shape[1])
            stand_in = _WeightOnly(weight)

            log.info("bench unsupervised: sefa on a %s weight", tuple(weight.shape))
            sefa_s, svd_s = _best_of(
                max(repeats, 3), partial(_sefa, fits, stand_in, k), partial(_svd, fits, weight, k)
            )
            agree = np.abs(_cosines(fits["sefa"].axes_[:8].numpy(), fits["svd"][:8]))
            result.update(
                {
                    f"sefa_{label}_shape": list(weight.shape),
                    f"sefa_{label}_seconds": round(sefa_s, 4),
                    f"sefa_{label}_svd_seconds": round(svd_s, 4),
                    f"sefa_{label}_cosine_vs_svd_top8_min": float(agree.min()),
                }
            )
    return result


def _sefa(fits: dict[str, object], generator: Generator, k: int) -> None:
    fits["sefa"] = SeFaFinder(n_components=k, normalize=False).fit(generator=generator)


def _svd(fits: dict[str, object], weight: torch.Tensor, k: int) -> None:
    """The reference: the top ``k`` right singular vectors of ``weight``, in float64."""
    fits["svd"] = np.linalg.svd(weight.double().numpy(), full_matrices=False)[2][:k]


__all__ = ["bench_unsupervised", "planted_w"]
