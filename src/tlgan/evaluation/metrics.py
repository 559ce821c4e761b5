"""Evaluation measurements: pure functions over latents, scores, axes and models; no file I/O.

Every function returns plain Python values (floats, lists, dicts keyed by attribute name) so
that the report can write them to JSON as they are. Conventions:

- ``latents`` (N, D) float, ``scores`` (N, A) classifier logits, ``attributes`` A names;
- a *label* is ``logit > 0``; a *probability* is ``sigmoid(logit)``, in [0, 1];
- cosines are between unit axes, in [-1, 1];
- a change of probability is in probability units (a change of 0.1 = ten percentage points).

The measures:

- :func:`separability`: InterFaceGAN's first table, per attribute the accuracy of a linear SVM
  on the top/bottom samples (``val_accuracy``) and on all other samples (``remaining_accuracy``).
- :func:`axis_geometry`: cosine matrix of the axes before and after disentangling from locks.
- :func:`label_correlation` / :func:`compare_correlations`: phi coefficients of binary labels,
  for generated samples and for a labelled data set, and how far apart they are.
- :func:`edit_effect` (from :mod:`tlgan.evaluation.edit_effects`): what moving along each axis
  does to every attribute's probability, and the locking demonstration of a pair of attributes.
- :func:`learning_curve`: cosine of fitted axes to the true ones against the sample count.
- :func:`compare_methods`: several finders' axes side by side.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError

# The edit effect lives in its own module; it is part of the measures, so it is named here too.
from tlgan.evaluation.edit_effects import MIN_TARGET_CHANGE as MIN_TARGET_CHANGE
from tlgan.evaluation.edit_effects import classifier_probabilities as classifier_probabilities
from tlgan.evaluation.edit_effects import edit_effect as edit_effect
from tlgan.evaluation.edit_effects import lock_demo_change as lock_demo_change
from tlgan.evaluation.edit_effects import lock_demo_key as lock_demo_key

log = logging.getLogger(__name__)

DEFAULT_CURVE_SIZES = (1_000, 5_000, 20_000, 100_000)


def _finite(value: float) -> float | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # counts stay integers
    value = float(value)
    return value if math.isfinite(value) else None


def _as_tensor(values, name: str, ndim: int) -> torch.Tensor:
    tensor = torch.as_tensor(values)
    if tensor.ndim != ndim:
        raise TlganError(f"{name} must have {ndim} dimensions; got shape {tuple(tensor.shape)}")
    return tensor


# --------------------------------------------------------------------------- fitting helpers
def fit_methods(
    latents: torch.Tensor,
    scores: torch.Tensor,
    attributes: Sequence[str],
    methods: Sequence[str],
    *,
    space: str = "z",
    generator: str = "unknown",
    finder_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, FeatureAxes]:
    """Fit one set of axes per finder name in ``methods`` on the same samples.

    ``finder_kwargs`` maps a method name to its constructor arguments (e.g. ``{"svm": {"ratio": 0.05}}``).
    Returns {method: FeatureAxes (A, D)} in the order of ``methods``.
    """
    from tlgan.axes.finders import make_finder

    finder_kwargs = finder_kwargs or {}
    out = {}
    for method in methods:
        finder = make_finder(method, **dict(finder_kwargs.get(method, {})))
        finder.fit(latents, scores, list(attributes))
        out[method] = finder.to_feature_axes(list(attributes), space=space, generator=generator)
    return out


# --------------------------------------------------------------------------- separability
def separability_from_svm(svm_axes: FeatureAxes) -> dict[str, dict[str, float | None]]:
    """Per attribute {val_accuracy, remaining_accuracy, n_train} from axes fitted by the SVM finder."""
    out = {}
    for name in svm_axes.attributes:
        metrics = svm_axes.metrics.get(name, {})
        out[name] = {
            key: (_finite(metrics[key]) if key in metrics else None)
            for key in ("val_accuracy", "remaining_accuracy", "n_train")
        }
    return out


def separability(
    latents: torch.Tensor,
    scores: torch.Tensor,
    attributes: Sequence[str],
    *,
    ratio: float = 0.02,
    val_fraction: float = 0.3,
    C: float = 1.0,
    seed: int = 0,
) -> dict[str, dict[str, float | None]]:
    """InterFaceGAN's separability table: per attribute, the SVM finder's accuracies.

    ``val_accuracy`` is measured on the held-out part of the top/bottom ``ratio`` of samples by
    score, ``remaining_accuracy`` on every sample outside them (the hard, near-boundary ones).
    Both are fractions in [0, 1].
    """
    from tlgan.axes.finders import make_finder

    finder = make_finder("svm", ratio=ratio, val_fraction=val_fraction, C=C, seed=seed)
    finder.fit(latents, scores, list(attributes))
    return separability_from_svm(finder.to_feature_axes(list(attributes)))


# --------------------------------------------------------------------------- geometry
def cosines(vectors: torch.Tensor) -> torch.Tensor:
    """(A, D) -> (A, A) cosine similarities of the rows (rows need not be unit length)."""
    from tlgan.axes.disentangle import cosine_matrix

    return torch.as_tensor(cosine_matrix(torch.as_tensor(vectors, dtype=torch.float32)), dtype=torch.float32)


def _max_offdiagonal(matrix: torch.Tensor) -> float | None:
    if len(matrix) < 2:
        return None
    off = matrix.abs().clone()
    off.fill_diagonal_(0.0)
    return float(off.max())


def axis_geometry(axes: FeatureAxes, locks: Sequence[str] = ()) -> dict[str, Any]:
    """Cosine matrix of all axes, before and after disentangling against the locked set.

    Returns ``attributes``, ``locks``, ``before`` and ``after`` ((A, A) nested lists),
    ``max_abs_offdiagonal_before/after`` and, for each axis, its largest |cosine| to any locked
    axis other than itself before and after (``max_abs_cos_to_locks``). After disentangling every
    non-locked axis is orthogonal to every locked one, so the "after" values are ~0.
    """
    from tlgan.axes.disentangle import disentangle

    locks = list(locks)
    before = cosines(axes.vectors)
    after_axes = disentangle(axes, locks) if locks else axes
    after = cosines(after_axes.vectors)
    lock_idx = [axes.index(name) for name in locks]
    to_locks: dict[str, dict[str, float | None]] = {}
    for i, name in enumerate(axes.attributes):
        others = [j for j in lock_idx if j != i]
        if not others:
            continue
        to_locks[name] = {
            "before": float(before[i, others].abs().max()),
            "after": float(after[i, others].abs().max()),
        }
    return {
        "attributes": list(axes.attributes),
        "locks": locks,
        "before": before.tolist(),
        "after": after.tolist(),
        "max_abs_offdiagonal_before": _max_offdiagonal(before),
        "max_abs_offdiagonal_after": _max_offdiagonal(after),
        "max_abs_cos_to_locks": to_locks,
    }


# --------------------------------------------------------------------------- correlations
def label_correlation(labels: torch.Tensor) -> torch.Tensor:
    """(N, A) binary labels -> (A, A) Pearson correlation of the 0/1 labels (the phi coefficient).

    A column that never changes has no correlation with anything: its row and column are NaN
    (the diagonal too).
    """
    labels = _as_tensor(labels, "labels", 2).to(torch.float64)
    if len(labels) < 2:
        raise TlganError(f"need at least 2 labelled samples to correlate attributes; got {len(labels)}")
    centred = labels - labels.mean(0, keepdim=True)
    cov = centred.T @ centred / len(labels)
    std = cov.diagonal().sqrt()
    corr = cov / (std[:, None] * std[None, :])
    corr[std < 1e-12, :] = float("nan")
    corr[:, std < 1e-12] = float("nan")
    return corr.clamp(-1.0, 1.0).to(torch.float32)


def _matrix_list(matrix: torch.Tensor) -> list[list[float | None]]:
    return [[_finite(v) for v in row] for row in matrix.tolist()]


def compare_correlations(
    generated_labels: torch.Tensor,
    generated_attributes: Sequence[str],
    data_labels: torch.Tensor | None = None,
    data_attributes: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Attribute correlations of generated samples, and of a labelled data set when given.

    ``generated_labels`` (N, A) and ``data_labels`` (M, B) are binary. The data set is compared
    on the attributes both share (in the generated order); ``mean_abs_difference`` is the mean of
    |corr_generated - corr_data| over the off-diagonal pairs where both are defined.
    ``frequency`` gives each attribute's positive rate.
    """
    generated_labels = _as_tensor(generated_labels, "generated labels", 2)
    generated_attributes = list(generated_attributes)
    if generated_labels.shape[1] != len(generated_attributes):
        raise TlganError(
            f"generated labels have {generated_labels.shape[1]} columns but {len(generated_attributes)} "
            f"attribute names were given"
        )
    gen_corr = label_correlation(generated_labels)
    out: dict[str, Any] = {
        "attributes": generated_attributes,
        "generated": _matrix_list(gen_corr),
        "generated_frequency": {
            a: float(f)
            for a, f in zip(generated_attributes, generated_labels.float().mean(0).tolist(), strict=True)
        },
        "n_generated": int(len(generated_labels)),
    }
    if data_labels is None:
        return out
    data_labels = _as_tensor(data_labels, "data labels", 2)
    data_attributes = list(data_attributes or [])
    if data_labels.shape[1] != len(data_attributes):
        raise TlganError(
            f"data labels have {data_labels.shape[1]} columns but {len(data_attributes)} attribute names "
            f"were given"
        )
    common = [a for a in generated_attributes if a in data_attributes]
    if len(common) < 2:
        raise TlganError(
            f"the labelled data shares {len(common)} attribute(s) with the generated samples "
            f"({', '.join(common) or 'none'}); it needs at least 2 to compare correlations: "
            f"give a data folder labelled with the classifier's attributes "
            f"({', '.join(generated_attributes[:5])}, ...)"
        )
    gen_idx = [generated_attributes.index(a) for a in common]
    data_idx = [data_attributes.index(a) for a in common]
    gen_common = gen_corr[gen_idx][:, gen_idx].to(torch.float64)
    data_corr = label_correlation(data_labels[:, data_idx]).to(torch.float64)
    diff = gen_common - data_corr
    off = ~torch.eye(len(common), dtype=torch.bool) & torch.isfinite(diff)
    out.update(
        {
            "common_attributes": common,
            "generated_common": _matrix_list(gen_common),
            "data": _matrix_list(data_corr),
            "difference": _matrix_list(diff),
            "data_frequency": {
                a: float(f)
                for a, f in zip(common, data_labels[:, data_idx].float().mean(0).tolist(), strict=True)
            },
            "n_data": int(len(data_labels)),
            "mean_abs_difference": float(diff[off].abs().mean()) if off.any() else None,
            "max_abs_difference": float(diff[off].abs().max()) if off.any() else None,
        }
    )
    return out


# --------------------------------------------------------------------------- ground truth
def cosine_to_truth(axes: FeatureAxes, truth: FeatureAxes) -> dict[str, float]:
    """Cosine of each fitted axis to the true axis of the same name (attributes without truth are left out)."""
    out = {}
    for name in axes.attributes:
        if name in truth.attributes:
            a, b = axes[name].double(), truth[name].double()
            out[name] = float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))
    return out


def curve_sizes(n: int, sizes: Sequence[int] = DEFAULT_CURVE_SIZES) -> list[int]:
    """The sub-sample sizes of a learning curve on a run of ``n`` samples: ``sizes`` capped at n."""
    return sorted({min(int(s), int(n)) for s in sizes if int(s) > 0})


def learning_curve(
    latents: torch.Tensor,
    scores: torch.Tensor,
    attributes: Sequence[str],
    truth: FeatureAxes,
    methods: Sequence[str] = ("glm", "logistic", "svm"),
    sizes: Sequence[int] = DEFAULT_CURVE_SIZES,
    *,
    finder_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    fitted: Mapping[str, FeatureAxes] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Cosine of fitted axes to the true axes, per method, against the number of samples.

    The sub-sample of size k is the first k samples of the run (samples are independent draws,
    so this is a random subset, and the curves are nested). ``sizes`` are capped at N. ``fitted``
    may hold axes already fitted on all N samples per method, to reuse for k = N. A fit that the
    finder refuses (e.g. too few samples for the SVM's top/bottom ratio) gives None and its reason
    in ``errors``.

    Returns {"sizes": [k...], "attributes": [...], "methods": {method: {"mean": [per size],
    "min": [per size], "per_attribute": {attr: [per size]}}}, "errors": {method: {k: message}}}.
    """
    from tlgan.axes.finders import make_finder

    latents = _as_tensor(latents, "latents", 2)
    scores = _as_tensor(scores, "scores", 2)
    attributes = list(attributes)
    names = [a for a in attributes if a in truth.attributes]
    if not names:
        raise TlganError(
            f"none of the attributes ({', '.join(attributes)}) has a true axis "
            f"(the truth has {', '.join(truth.attributes)})"
        )
    ks = curve_sizes(len(latents), sizes)
    finder_kwargs = finder_kwargs or {}
    fitted = fitted or {}
    result: dict[str, Any] = {"sizes": ks, "attributes": names, "methods": {}, "errors": {}}
    jobs = [(m, k) for m in methods for k in ks]
    per: dict[str, dict[str, list[float | None]]] = {m: {a: [] for a in names} for m in methods}
    for method, k in tqdm(jobs, desc="learning curve", disable=not progress, leave=False):
        if k == len(latents) and method in fitted:
            axes = fitted[method]
        else:
            try:
                finder = make_finder(method, **dict(finder_kwargs.get(method, {})))
                finder.fit(latents[:k], scores[:k], attributes)
                axes = finder.to_feature_axes(attributes, space=truth.space)
            except TlganError as exc:
                log.info("learning curve: %s on %d samples: %s", method, k, exc)
                result["errors"].setdefault(method, {})[str(k)] = str(exc)
                for a in names:
                    per[method][a].append(None)
                continue
        cos = cosine_to_truth(axes, truth)
        for a in names:
            per[method][a].append(cos.get(a))
    for method in methods:
        by_size = list(zip(*[per[method][a] for a in names], strict=True))
        mean = [float(np.mean(v)) if all(x is not None for x in v) else None for v in by_size]
        low = [float(np.min(v)) if all(x is not None for x in v) else None for v in by_size]
        result["methods"][method] = {"mean": mean, "min": low, "per_attribute": per[method]}
    return result


# --------------------------------------------------------------------------- method comparison
def compare_methods(
    axes_by_method: Mapping[str, FeatureAxes],
    entanglement_by_method: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    truth: FeatureAxes | None = None,
) -> dict[str, Any]:
    """Finders side by side on the same samples.

    ``axes_by_method``: {method: FeatureAxes} over the same attributes. Returns ``methods``,
    ``attributes``, ``metrics`` ({method: {attr: the finder's own metrics}}), ``cosine``
    ({"a~b": {attr: cos}} for every pair of methods), ``mean_cosine`` ({"a~b": float}),
    ``entanglement`` ({method: {attr: ratio}}) when ``entanglement_by_method`` (each an
    :func:`edit_effect` ``entanglement`` dict) is given, and ``cosine_to_truth``
    ({method: {attr: cos}}) when ``truth`` is given.
    """
    methods = list(axes_by_method)
    if not methods:
        raise TlganError("compare_methods needs at least one set of axes")
    attributes = [
        a
        for a in axes_by_method[methods[0]].attributes
        if all(a in axes_by_method[m].attributes for m in methods)
    ]
    out: dict[str, Any] = {
        "methods": methods,
        "attributes": attributes,
        "metrics": {
            m: {
                a: {
                    k: _finite(v)
                    for k, v in axes_by_method[m].metrics.get(a, {}).items()
                    if isinstance(v, (int, float))
                }
                for a in attributes
            }
            for m in methods
        },
        "cosine": {},
        "mean_cosine": {},
    }
    for m1, m2 in combinations(methods, 2):
        key = f"{m1}~{m2}"
        cos = {
            a: float(torch.dot(axes_by_method[m1][a].double(), axes_by_method[m2][a].double()))
            for a in attributes
        }
        out["cosine"][key] = cos
        out["mean_cosine"][key] = float(np.mean(list(cos.values()))) if cos else None
    if entanglement_by_method:
        out["entanglement"] = {
            m: {a: entanglement_by_method[m].get(a, {}).get("ratio") for a in attributes}
            for m in methods
            if m in entanglement_by_method
        }
    if truth is not None:
        out["cosine_to_truth"] = {
            m: cosine_to_truth(axes_by_method[m].subset(attributes), truth) for m in methods
        }
    return out
