"""``pca``: GANSpace's directions, principal components of the latents or of an early layer's activations.

For a latent space that is not isotropic (StyleGAN's w), the principal components of sampled
latents are directions the generator favours. For an isotropic z (a plain generator) every
direction has the same variance, so GANSpace takes the principal components of an early layer's
activations instead and regresses them back to z: for centred activations Y (m, F) with top
right singular vectors V (F, K), the coordinates X = Y V (m, K) are regressed on the centred
latents, Z ~ X B, and row k of B (unit length) is component k's latent direction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tlgan.axes.finders.common import (
    FINDERS,
    _as_matrix,
    _blas_threads,
    _count_bad_rows,
    _numpy,
    accumulate_gram,
)
from tlgan.axes.finders.components import ComponentFinder, check_n_components
from tlgan.errors import TlganError

log = logging.getLogger(__name__)

SOURCES = ("auto", "latent", "activations")
# Sample eigenvalues of isotropic noise stay below the Marchenko-Pastur edge; a component counts
# as structure only above the edge times this margin (finite-sample fluctuations are far smaller).
NOISE_MARGIN = 1.05


def marchenko_pastur_median(gamma: float) -> float:
    """Median of the Marchenko-Pastur law with ratio ``gamma`` = D / N (<= 1) and unit variance."""
    lo, hi = (1 - math.sqrt(gamma)) ** 2, (1 + math.sqrt(gamma)) ** 2
    x = np.linspace(lo, hi, 20001)[1:-1]
    density = np.sqrt((hi - x) * (x - lo)) / (2 * math.pi * gamma * x)
    cdf = np.cumsum(density)
    return float(x[np.searchsorted(cdf, cdf[-1] / 2)])


@FINDERS.register(
    "pca",
    "GANSpace: principal components of the latents, or of an early layer's activations regressed back to z",
)
class PCAFinder(ComponentFinder):
    """GANSpace: the top ``n_components`` principal directions, named ``pc0``, ``pc1``, ...

    Args:
        n_components: K, the number of components.
        source: "latent" (PCA of the latents themselves), "activations" (PCA of the
            generator's ``layer`` activations regressed back to the latent, which needs
            ``generator=``), or "auto": activations for the generator's first space (z) when the
            generator names a feature layer (or ``layer`` is given), else latent.
        layer: module name for "activations" (default: the generator's ``feature_layer``).
        max_samples: activations are read for at most this many samples (the first ones).
        batch_size: samples per generator pass when reading activations.
        chunk_size: rows per step of the streamed covariance (latent source).
        seed: seed of the randomised SVD of the activations.

    ``values_`` are the variances along the components (of the latents, or of the activations).
    For the latent source with N > D the spectrum is compared with isotropic noise: a component
    is ``above_noise`` when its variance exceeds the Marchenko-Pastur edge
    sigma^2 (1 + sqrt(D / N))^2 (times 1.05), with sigma^2 estimated from the median eigenvalue;
    ``summary_["isotropic"]`` is True when none is, i.e. the components are arbitrary directions.
    Metrics per component: ``variance``, ``variance_ratio`` (of the total), ``above_noise``.
    """

    name = "pca"
    value_name = "variance"

    def __init__(
        self,
        n_components: int = 64,
        source: str = "auto",
        layer: str | None = None,
        max_samples: int = 4096,
        batch_size: int = 256,
        chunk_size: int = 16384,
        seed: int = 0,
    ):
        self.n_components = n_components
        self.source = source
        self.layer = layer
        self.max_samples = max_samples
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.seed = seed

    def _resolve_source(self, generator, space: str) -> str:
        if self.source not in SOURCES:
            raise TlganError(f"source must be one of {', '.join(map(repr, SOURCES))} (got {self.source!r})")
        if self.source != "auto":
            return self.source
        plain_z = generator is not None and space == generator.spaces[0]
        has_layer = generator is not None and (self.layer or getattr(generator, "feature_layer", None))
        return "activations" if plain_z and has_layer else "latent"

    def fit(
        self,
        latents,
        scores=None,
        attributes: Sequence[str] | None = None,
        *,
        generator=None,
        space: str = "z",
    ) -> PCAFinder:
        """PCA of ``latents`` (N, D) of ``space`` (scores and attribute names are not used)."""
        latents = _as_matrix(latents, "latents")
        if latents.ndim != 2 or len(latents) < 2:
            hint = (
                "; wp latents hold one w per layer: fit pca on a run sampled in w"
                if latents.ndim == 3
                else ""
            )
            raise TlganError(
                f"pca needs latents of shape (N, D) with N >= 2; got {tuple(latents.shape)}{hint}"
            )
        _count_bad_rows(latents, "latents")
        k = check_n_components(self.n_components, latents.shape[1])
        source = self._resolve_source(generator, space)
        if source == "activations":
            if generator is None:
                raise TlganError(
                    "pca with source='activations' reads the generator's activations: pass generator=... "
                    "(`tlgan fit` loads the run's generator), or use source='latent'"
                )
            self._fit_activations(latents, k, generator, space)
        else:
            self._fit_latent(_numpy(latents), k)
        return self

    def _fit_latent(self, x: np.ndarray, k: int) -> None:
        from scipy.linalg import eigh

        n, dim = x.shape
        shift = x[: min(n, max(1, int(self.chunk_size)))].mean(0, dtype=np.float64)

        def fill(start: int, stop: int, rows: np.ndarray) -> None:
            np.subtract(x[start:stop], shift, out=rows[:, :dim])
            rows[:, dim] = 1.0  # the last row/column of the Gram matrix then holds the sums and N

        # float32 chunk products (summed in float64) are ample for the leading components of a
        # covariance and take half the time of float64 ones; the shift keeps the entries small.
        gram, _ = accumulate_gram(
            n, dim + 1, self.chunk_size, fill, progress=True, desc="pca", dtype=np.float32
        )
        mean = gram[:dim, dim] / n
        cov = (gram[:dim, :dim] - n * np.outer(mean, mean)) / (n - 1)
        with _blas_threads(1):  # multi-threaded LAPACK is many times slower on a shared machine
            values, vectors = eigh(cov, check_finite=False)
        values, vectors = np.maximum(values[::-1], 0.0), vectors[:, ::-1]
        metrics: dict[int, dict[str, Any]] = self._value_metrics(values[:k], float(values.sum()))
        summary: dict[str, Any] = {"source": "latent"}
        if n > dim:
            gamma = dim / n
            sigma2 = float(np.median(values)) / marchenko_pastur_median(gamma)
            edge = sigma2 * (1 + math.sqrt(gamma)) ** 2 * NOISE_MARGIN
            above = values[:k] > edge
            for i in range(k):
                metrics[i]["above_noise"] = bool(above[i])
            summary.update(
                {"noise_edge": edge, "n_above_noise": int(above.sum()), "isotropic": not bool(above.any())}
            )
            if not above.any():
                log.info(
                    "pca: the %d latent variances all lie within the spread of isotropic noise (edge %.4g): "
                    "this space has no preferred directions",
                    dim,
                    edge,
                )
        self.summary_ = summary
        self._set_components(vectors[:, :k].T, values[:k], mean + shift, metrics, n)

    def _fit_activations(self, latents: torch.Tensor, k: int, generator, space: str) -> None:
        m = min(len(latents), max(2, int(self.max_samples)))
        z = latents[:m].float()
        parts = []
        with torch.inference_mode():
            for start in range(0, m, max(1, int(self.batch_size))):
                chunk = z[start : start + int(self.batch_size)]
                parts.append(generator.activations(chunk, space, self.layer).float().cpu())
        y = torch.cat(parts)
        if k > min(y.shape):
            raise TlganError(
                f"n_components={k} is more than the {min(y.shape)} the activations allow "
                f"({m} samples x {y.shape[1]} features); lower n_components or raise max_samples"
            )
        y -= y.mean(0)
        values, basis = _top_right_singular(y, k, self.seed)
        coords = y @ basis  # (m, K)
        zc = (z - z.mean(0)).double()
        directions = torch.linalg.lstsq(coords.double(), zc).solution  # (K, D)
        variances = values.double() ** 2 / (m - 1)
        total = float((y.double() ** 2).sum()) / (m - 1)
        self.summary_ = {
            "source": "activations",
            "layer": self.layer or generator.feature_layer,
            "activation_samples": int(m),
            "activation_features": int(y.shape[1]),
        }
        self._set_components(
            directions.numpy(),
            variances.numpy(),
            _numpy(latents).mean(0, dtype=np.float64),
            self._value_metrics(variances.numpy(), total),
            len(latents),
        )


def _top_right_singular(y: torch.Tensor, k: int, seed: int, oversample: int = 10, power: int = 3):
    """Top ``k`` singular values (k,) and right singular vectors (F, k) of ``y`` (m, F).

    A randomised range finder (Halko, Martinsson & Tropp) with a seeded test matrix and
    ``power`` re-orthonormalised power iterations: exact enough for the top components and
    O(m F k) instead of the O(m F min(m, F)) of a full SVD.
    """
    q = min(k + oversample, *y.shape)
    g = torch.Generator().manual_seed(int(seed))
    basis = torch.linalg.qr(y.T @ torch.randn(y.shape[0], q, generator=g, dtype=y.dtype))[0]  # (F, q)
    for _ in range(power):
        left = torch.linalg.qr(y @ basis)[0]
        basis = torch.linalg.qr(y.T @ left)[0]
    small = y @ basis  # (m, q)
    _, s, vh = torch.linalg.svd(small, full_matrices=False)
    return s[:k], basis @ vh[:k].T
