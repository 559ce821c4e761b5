"""Unsupervised directions (pca, sefa) beside the supervised axes: what they find and how cleanly.

For each attribute, the best-matching component of each unsupervised finder is the one with
the largest |cosine| to the supervised axis of that attribute (and, when the generator knows
its true axes, separately the largest |cosine| to the true axis). Its entanglement comes from the
same edit effect that names the components (:func:`tlgan.evaluation.naming.name_directions`), so
every component is edited once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.evaluation.metrics import MIN_TARGET_CHANGE
from tlgan.evaluation.naming import name_directions
from tlgan.models.base import Classifier, Generator

log = logging.getLogger(__name__)

UNSUPERVISED = ("pca", "sefa")


def random_direction_cosine(dim: int, k: int, draws: int = 200, seed: int = 0) -> float:
    """Mean over ``draws`` of the largest |cosine| between a fixed unit vector and ``k`` random unit
    directions in R^dim: what "the best of k components" reaches by chance."""
    g = torch.Generator().manual_seed(int(seed))
    vectors = torch.nn.functional.normalize(
        torch.randn(draws, k, dim, generator=g, dtype=torch.float64), dim=2
    )
    return float(vectors[:, :, 0].abs().amax(dim=1).mean())


def _ratio(sizes: Mapping[str, float], target: str) -> float | None:
    if sizes.get(target, 0.0) <= MIN_TARGET_CHANGE:
        return None
    return max(v for a, v in sizes.items() if a != target) / sizes[target] if len(sizes) > 1 else None


def _best(components: torch.Tensor, reference: torch.Tensor):
    """(index, |cos|, sign) of the row of ``components`` (K, D) closest in angle to ``reference`` (D,)."""
    cos = components.double() @ reference.double() / reference.double().norm().clamp_min(1e-12)
    i = int(cos.abs().argmax())
    return i, float(cos[i].abs()), 1 if float(cos[i]) >= 0 else -1


def compare_unsupervised(
    reference: FeatureAxes,
    generator: Generator,
    classifier: Classifier,
    latents: torch.Tensor,
    faces: torch.Tensor,
    *,
    methods: Sequence[str] = UNSUPERVISED,
    n_components: int = 64,
    truth: FeatureAxes | None = None,
    steps: Sequence[float] = (-2.0, 2.0),
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Fit each unsupervised finder in ``methods``, name its components, and match them to ``reference``.

    - ``reference``: supervised axes (e.g. the axes under test), one per attribute;
    - ``latents`` (N, D): the run's samples (pca fits on them); ``faces`` (M, D): the faces edited
      to name the components;
    - ``truth``: the generator's true axes, when it knows them.

    Returns ``methods`` {method: {available, reason (when not), source, isotropic, n_components,
    found: {attribute: [{component, sign, purity}] best first}, unnamed: [components]}},
    ``attributes`` {attribute: {method: {component, cosine, sign, entanglement, purity,
    cosine_to_truth, truth_component}}}, ``random_cosine`` (the best |cosine| that K random
    directions reach by chance), ``reference_method``.
    """
    from tlgan.axes.finders import make_finder

    dim = reference.dim
    k = min(int(n_components), dim)
    out: dict[str, Any] = {
        "reference_method": reference.method,
        "n_components": k,
        "faces": int(len(faces)),
        "random_cosine": random_direction_cosine(dim, k),
        "methods": {},
        "attributes": {a: {} for a in reference.attributes},
    }
    for method in methods:
        try:
            finder = make_finder(method, n_components=k).fit(
                latents, None, None, generator=generator, space=reference.space
            )
        except TlganError as exc:
            log.info("unsupervised comparison: %s is not available here: %s", method, exc)
            out["methods"][method] = {"available": False, "reason": str(exc)}
            continue
        axes = finder.to_feature_axes(space=reference.space, generator=reference.generator)
        named = name_directions(
            axes, generator, classifier, faces, steps=steps, rename=False, device=device, progress=progress
        )
        table = named.info["naming"]["components"]
        found: dict[str, list] = {}
        for name, entry in table.items():
            if entry["attribute"] is not None:
                found.setdefault(entry["attribute"], []).append(
                    {"component": name, "sign": entry["sign"], "purity": entry["purity"]}
                )
        for hits in found.values():
            hits.sort(key=lambda h: -h["purity"])
        out["methods"][method] = {
            "available": True,
            "source": axes.info.get("source"),
            "isotropic": axes.info.get("isotropic"),
            "n_components": k,
            "found": found,
            "unnamed": [n for n, e in table.items() if e["attribute"] is None],
            "values": [float(v) for v in finder.values_],
        }
        for attr in reference.attributes:
            i, cos, sign = _best(axes.vectors, reference[attr])
            entry = table[axes.attributes[i]]
            row = {
                "component": axes.attributes[i],
                "cosine": cos,
                "sign": sign,
                "purity": entry["purity"] if entry["attribute"] == attr else None,
                "entanglement": _ratio(entry["sizes"], attr) if attr in entry["sizes"] else None,
            }
            if truth is not None and attr in truth.attributes:
                j, cos_truth, _ = _best(axes.vectors, truth[attr])
                row.update({"cosine_to_truth": cos_truth, "truth_component": axes.attributes[j]})
            out["attributes"][attr][method] = row
    return out


def findings_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """Per method: the attributes it finds, each with its purest component and purity; or why nothing."""
    summary = {}
    for method, info in result["methods"].items():
        if not info["available"]:
            summary[method] = {"available": False, "reason": info["reason"]}
            continue
        summary[method] = {
            "isotropic": info.get("isotropic"),
            "found": {
                a: {
                    "component": hits[0]["component"],
                    "sign": hits[0]["sign"],
                    "purity": round(hits[0]["purity"], 3),
                }
                for a, hits in info["found"].items()
            },
        }
    return summary


__all__ = ["UNSUPERVISED", "compare_unsupervised", "findings_summary", "random_direction_cosine"]
