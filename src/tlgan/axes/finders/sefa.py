"""``sefa``: SeFa's closed-form directions, the top eigenvectors of A^T A for the first latent weight A.

A layer that takes the latent d maps it to features A d (+ bias). The unit directions that change
those features most are the top eigenvectors of A^T A; no samples are needed. For StyleGAN2 A is
the concatenation of the chosen layers' style affine weights (the generator provides it through
:meth:`tlgan.models.base.Generator.latent_weight`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from tlgan.axes.finders.common import FINDERS, _as_matrix, _blas_threads, _count_bad_rows, _numpy
from tlgan.axes.finders.components import ComponentFinder, check_n_components
from tlgan.errors import TlganError

log = logging.getLogger(__name__)


@FINDERS.register(
    "sefa", "SeFa: top eigenvectors of A^T A for the generator's first latent-to-feature weight A"
)
class SeFaFinder(ComponentFinder):
    """SeFa: the top ``n_components`` eigenvectors of A^T A, named ``pc0``, ``pc1``, ...

    Args:
        n_components: K, the number of components.
        layers: style layers whose weights are concatenated (indices; None = all), for generators
            that have several (StyleGAN2); must be None for one-layer generators.
        normalize: scale each of A's F rows (one output feature's weights) to unit length first,
            as SeFa's reference implementation does, so no feature dominates by its scale alone.

    ``fit`` needs ``generator=`` (and the latent ``space``); latents are optional and only
    centre ``decision_function``. ``values_`` are the eigenvalues. Metrics per component:
    ``eigenvalue``, ``eigenvalue_ratio`` (of the trace).
    """

    name = "sefa"
    value_name = "eigenvalue"

    def __init__(self, n_components: int = 64, layers: Sequence[int] | None = None, normalize: bool = True):
        self.n_components = n_components
        self.layers = layers
        self.normalize = normalize

    def fit(
        self,
        latents=None,
        scores=None,
        attributes: Sequence[str] | None = None,
        *,
        generator=None,
        space: str = "z",
    ) -> SeFaFinder:
        from scipy.linalg import eigh

        if generator is None:
            raise TlganError(
                "sefa factorises the generator's weights, not samples: pass generator=... "
                "(`tlgan fit RUN --method sefa` loads the run's generator)"
            )
        layers = None if self.layers is None else [int(i) for i in self.layers]
        weight = generator.latent_weight(space, layers)
        dim = generator.latent_dim(space)
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2 or weight.shape[1] != dim:
            shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
            raise TlganError(
                f"generator {generator.name!r}: latent_weight({space!r}) must return an (F, {dim}) "
                f"tensor; got {shape}"
            )
        k = check_n_components(self.n_components, dim)
        # Weights are float32; so is their product (A^T A is D x D whatever F is), the
        # eigendecomposition is float64.
        a = weight.detach().to("cpu", torch.float32).numpy()
        if not np.isfinite(a).all():
            raise TlganError(f"generator {generator.name!r}: its latent weight holds NaN or infinite values")
        if self.normalize:
            norms = np.linalg.norm(a, axis=1, keepdims=True)
            a = a / np.where(norms > 0, norms, 1.0)
        # Single-threaded BLAS: on a shared machine multi-threaded LAPACK takes seconds for a
        # 512 x 512 eigendecomposition that one thread does in a fraction of one.
        with _blas_threads(1):
            gram = (a.T @ a).astype(np.float64)
            values, vectors = eigh(gram, subset_by_index=[dim - k, dim - 1], check_finite=False)
        values, vectors = np.maximum(values[::-1], 0.0), vectors[:, ::-1]
        trace = float(np.trace(gram))
        mean, n = None, 0
        if latents is not None:
            latents = _as_matrix(latents, "latents")
            if latents.ndim == 3 and latents.shape[2] == dim:  # wp: (N, num_ws, w_dim), one w per layer
                latents = latents.reshape(-1, dim)
            if latents.ndim != 2 or latents.shape[1] != dim:
                raise TlganError(
                    f"latents of shape {tuple(latents.shape)} do not fit space {space!r} of size {dim}"
                )
            _count_bad_rows(latents, "latents")
            mean, n = _numpy(latents).mean(0, dtype=np.float64), len(latents)
        self.summary_ = {"weight_shape": [int(s) for s in weight.shape], "layers": layers}
        self._set_components(vectors.T, values, mean, self._value_metrics(values, trace), n)
        return self
