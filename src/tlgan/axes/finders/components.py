"""What the unsupervised finders (pca, sefa) share: components named ``pc0``, ``pc1``, ... with a value each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.axes.finders.common import AxisFinder
from tlgan.errors import TlganError


def component_names(k: int) -> list[str]:
    """``pc0`` .. ``pc{k-1}``: the names of unnamed components."""
    return [f"pc{i}" for i in range(int(k))]


def check_n_components(n_components: Any, dim: int) -> int:
    try:
        k = int(n_components)
    except (TypeError, ValueError):
        k = 0
    if k < 1 or k != n_components:
        raise TlganError(f"n_components must be a positive whole number (got {n_components!r})")
    if k > dim:
        raise TlganError(f"n_components={k} is more than the latent size {dim}; ask for at most {dim}")
    return k


class ComponentFinder(AxisFinder):
    """Base of the unsupervised finders: K unit directions ordered by ``values_`` (descending).

    ``coef_`` = ``axes_`` (K, D) unit rows and ``bias_`` = ``-mean @ axes_.T`` (zero without
    samples), so ``decision_function(latents)`` gives each latent's centred coordinate along
    every component. Scores and attribute names given to ``fit`` are ignored: components are
    named ``pc0``, ``pc1``, ... (``attributes_``) until :func:`tlgan.evaluation.naming.name_directions`
    names them. ``values_`` (K,) holds each component's variance (pca) or eigenvalue (sefa).
    """

    uses_generator = True
    value_name = "value"
    _fitted_attributes = AxisFinder._fitted_attributes + ("values_",)

    def _set_components(
        self,
        vectors: np.ndarray,
        values: np.ndarray,
        mean: np.ndarray | None,
        metrics: dict[str, dict[str, Any]],
        n_samples: int,
    ) -> None:
        """``vectors`` (K, D) and ``values`` (K,) in descending order of value."""
        vectors = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float64))
        vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-300)
        # A fixed sign (largest entry positive) so that refits give the same directions, not flipped ones.
        signs = torch.sign(vectors.gather(1, vectors.abs().argmax(dim=1, keepdim=True)))
        vectors = vectors * torch.where(signs == 0, torch.ones_like(signs), signs)
        bias = (
            torch.zeros(len(vectors), dtype=torch.float64)
            if mean is None
            else -(vectors @ torch.from_numpy(np.asarray(mean, dtype=np.float64)))
        )
        names = component_names(len(vectors))
        self._set_fitted(
            vectors, bias, names, {n: metrics.get(i, {}) for i, n in enumerate(names)}, n_samples
        )
        self.values_ = torch.from_numpy(np.asarray(values, dtype=np.float64)).float()

    def _value_metrics(self, values: np.ndarray, total: float) -> dict[int, dict[str, Any]]:
        ratio = f"{self.value_name}_ratio"
        return {
            i: {self.value_name: float(v), ratio: float(v / total) if total > 0 else None}
            for i, v in enumerate(values)
        }

    def to_feature_axes(
        self, attributes: Sequence[str] | None = None, space: str = "z", generator: str = "unknown"
    ) -> FeatureAxes:
        axes = super().to_feature_axes(attributes, space=space, generator=generator)
        axes.info[f"{self.value_name}s"] = [float(v) for v in self.values_]
        axes.info.update(getattr(self, "summary_", {}))
        return axes
