"""Axes fitted in several latent spaces of one generator, each against that space's truth.

InterFaceGAN compared z and w of StyleGAN by separability alone; a generator that knows its true
axes in both (``toyfaces-style``: the average gradient in z, the exact directions in w) also says
how close each fitted axis comes to the truth, and, in wp, which layers each attribute lives in.

Pure functions and a typed result: they read the run's scores and latents handed to them and
write no files. :func:`compare_finders` backs ``tlgan toyfaces compare-finders``;
:func:`measure_spaces` backs the report's section "Latent spaces".
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.models.base import Classifier, Generator, latent_rng_normal


def run_latents(run, generator: Generator, space: str) -> torch.Tensor:
    """The run's latents in ``space`` (z or w) for ``generator``, (N, D): sample i's z is (run seed, i).

    A run stores one space; the other is recomputed (z redrawn from the seed, w mapped from z),
    so fits in z and w see the same faces and the same classifier scores. With a generator other
    than the run's, its own w is mapped from the same z: meaningful only when it draws the same
    face for the same z (``toyfaces-style-aniso`` for a ``toyfaces-style`` run).
    """
    if space == run.space and generator.name == run.generator:
        return run.latents()
    if run.space == "z":
        z = run.latents()
    else:
        z = latent_rng_normal(run.seed, np.arange(run.n), generator.z_dim)
    if space == "z":
        return z
    with torch.inference_mode():
        return generator.map_latents(z, "z", space).float()


def truth_spaces(generator: Generator, spaces: Sequence[str] = ("z", "w")) -> list[str]:
    """The spaces among ``spaces`` that ``generator`` has and knows its true axes in."""
    out = []
    for space in spaces:
        try:
            generator.check_space(space)
        except TlganError:
            continue
        if generator.true_axes(space=space) is not None:
            out.append(space)
    return out


def fit_and_score(
    method: str,
    latents: torch.Tensor,
    scores: torch.Tensor,
    attributes: Sequence[str],
    truth: FeatureAxes,
    space: str,
    generator_name: str,
) -> tuple[dict[str, Any], FeatureAxes]:
    """Fit ``method`` on ``latents`` (N, D) and ``scores`` (N, A) logits; compare with ``truth``.

    Returns (``{"cosine_to_truth": {attr: cos}, "separability": {attr: fraction of the N faces
    whose label (logit > 0) the axis's side of its fitted boundary gets right, in sample}, "mean",
    "min", "argmin" (of the cosines), "mean_separability", "fit_seconds", "fit_cpu_seconds"}``, the
    fitted axes).
    """
    from tlgan.axes.finders import make_finder

    finder = make_finder(method)
    wall, cpu = time.perf_counter(), time.process_time()
    finder.fit(latents, scores, list(attributes))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    axes = finder.to_feature_axes(space=space, generator=generator_name)
    cos = {a: float(torch.dot(axes[a], truth[a])) for a in attributes if a in truth.attributes}
    if not cos:
        raise TlganError(f"none of the attributes {list(attributes)} has a true axis in {space!r}")
    worst = min(cos, key=cos.get)
    agree = (finder.decision_function(latents) > 0) == (torch.as_tensor(scores) > 0)
    separability = {a: float(agree[:, j].float().mean()) for j, a in enumerate(attributes)}
    row = {
        "cosine_to_truth": cos,
        "separability": separability,
        "mean": float(np.mean(list(cos.values()))),
        "min": cos[worst],
        "argmin": worst,
        "mean_separability": float(np.mean(list(separability.values()))),
        "fit_seconds": wall,
        "fit_cpu_seconds": cpu,
    }
    return row, axes


def compare_finders(
    latents: dict[str, torch.Tensor],
    scores: torch.Tensor,
    attributes: Sequence[str],
    generator: Generator,
    methods: Sequence[str] = ("glm", "logistic", "svm"),
) -> dict:
    """Fit every finder in ``methods`` in every space of ``latents`` and score it against the truth.

    ``latents`` maps a space to (N, D) latents of the same N faces; ``scores`` (N, A) are their
    classifier logits. Returns ``{space: {method: row of fit_and_score}}`` plus ``"n"``,
    ``"attributes"``, ``"truth"`` ({space: the truth's method}) and ``"best"`` ({space: the method
    with the highest mean cosine}). The truth is ``generator.true_axes(space=...)``.
    Raises TlganError when latents and scores differ in length or a space has no truth.
    """
    attributes = list(attributes)
    out: dict = {"n": int(len(scores)), "attributes": attributes, "best": {}, "truth": {}}
    for space, lat in latents.items():
        if len(lat) != len(scores):
            raise TlganError(f"{space!r} latents hold {len(lat)} rows for {len(scores)} scores")
        truth = generator.true_axes(space=space)
        if truth is None:
            raise TlganError(f"generator {generator.name!r} does not know its true axes in {space!r}")
        out["truth"][space] = truth.method
        per_method = {}
        for method in methods:
            per_method[method] = fit_and_score(method, lat, scores, attributes, truth, space, generator.name)[
                0
            ]
        out[space] = per_method
        out["best"][space] = max(per_method, key=lambda m: per_method[m]["mean"])
    return out


@dataclass
class SpacesResult:
    """The report's section "Latent spaces".

    ``spaces`` {space: row of :func:`fit_and_score` plus ``"truth"`` (the truth's method)}, all
    fitted with ``method`` on the same ``n`` faces and scores; ``layers`` the result of
    :func:`tlgan.evaluation.layer_ranges.layer_range_effects` for the axes fitted in w, edited on
    each attribute's true wp layers (None without a wp space, true layers or edit faces).
    """

    method: str
    n: int
    attributes: list[str]
    spaces: dict[str, dict[str, Any]]
    layers: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def measure_spaces(
    run,
    scores: torch.Tensor,
    generator: Generator,
    classifier: Classifier,
    *,
    method: str,
    spaces: Sequence[str] = ("z", "w"),
    layer_faces: int = 16,
    step: float = 1.5,
    device: str = "cpu",
) -> SpacesResult | None:
    """Fit ``method`` on the run's faces in each of ``spaces`` and compare each with its truth.

    ``scores`` (N, A) are the run's logits. Returns None unless the generator knows its true axes
    in at least two of ``spaces``. When it has a wp space and its true w axes name each
    attribute's layers (``info["layers"]``: {attribute: list of wp layer indices}), the axes fitted
    in w are also edited by +-``step`` on ``layer_faces`` faces (0 skips it) on those layers, on
    all, and on the rest (:func:`~tlgan.evaluation.layer_ranges.layer_range_effects`).
    """
    present = truth_spaces(generator, spaces)
    if len(present) < 2:
        return None
    attributes = list(run.attributes)
    rows: dict[str, dict[str, Any]] = {}
    fitted: dict[str, FeatureAxes] = {}
    for space in present:
        truth = generator.true_axes(space=space)
        lat = run_latents(run, generator, space)
        row, fitted[space] = fit_and_score(method, lat, scores, attributes, truth, space, generator.name)
        rows[space] = {**row, "truth": truth.method}
    layers = None
    if "w" in fitted and layer_faces > 0:
        try:
            generator.check_space("wp")
            true_layers = generator.true_axes(space="w").info.get("layers")
        except TlganError:
            true_layers = None
        if true_layers:
            from tlgan.evaluation.layer_ranges import layer_range_effects

            names = [a for a in attributes if a in true_layers and a in classifier.attributes]
            layers = layer_range_effects(
                generator,
                classifier,
                fitted["w"],
                {a: true_layers[a] for a in names},
                faces=layer_faces,
                step=step,
                device=device,
            )
    return SpacesResult(method=method, n=int(len(scores)), attributes=attributes, spaces=rows, layers=layers)


__all__ = [
    "SpacesResult",
    "compare_finders",
    "fit_and_score",
    "measure_spaces",
    "run_latents",
    "truth_spaces",
]
