"""Measurements on ``toyfaces-style``: how linear z is, and which finder recovers the truth in z and w.

Pure functions returning plain dicts; ``tlgan toyfaces compare-finders`` and the report call them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from tlgan.errors import TlganError
from tlgan.models.base import latent_rng_normal


def linear_z_quality(generator, n: int = 8192, seed: int = 1) -> dict:
    """How well the best linear function of z predicts each attribute score of ``generator``.

    On ``n`` samples of ``seed``: least squares of each ground-truth score on [z, 1]. Returns
    ``{"n", "attributes": {name: {"r2", "label_accuracy"}}}`` where ``label_accuracy`` is the
    fraction of samples whose label (score > 0) the fitted linear function's sign gets right.
    In w the same numbers are 1 and 1 (the scores are affine in w). In-sample, so slightly
    optimistic; n should be well above 512.
    """
    if n <= generator.z_dim:
        raise TlganError(f"n must exceed z_dim ({generator.z_dim}) for a least-squares fit; got {n}")
    z = generator.sample_latents(n, seed=seed, space="z")
    with torch.inference_mode():
        scores = generator.latent_scores(z, "z").double().numpy()
    design = np.concatenate([z.double().numpy(), np.ones((n, 1))], axis=1)
    coef, *_ = np.linalg.lstsq(design, scores, rcond=None)
    fitted = design @ coef
    r2 = 1.0 - (scores - fitted).var(axis=0) / scores.var(axis=0)
    accuracy = ((fitted > 0) == (scores > 0)).mean(axis=0)
    names = list(generator.attributes)
    return {
        "n": n,
        "attributes": {
            a: {"r2": float(r2[j]), "label_accuracy": float(accuracy[j])} for j, a in enumerate(names)
        },
    }


def run_latents(run, generator, space: str) -> torch.Tensor:
    """The run's latents in ``space`` (z or w) for ``generator``: sample i's z is (run seed, i).

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


def compare_finders(
    latents: dict[str, torch.Tensor],
    scores: torch.Tensor,
    attributes: Sequence[str],
    generator,
    methods: Sequence[str] = ("glm", "logistic", "svm"),
) -> dict:
    """Fit every finder in ``methods`` in every space of ``latents`` and score it against the truth.

    ``latents`` maps a space to (N, D) latents of the same N faces; ``scores`` (N, A) are their
    classifier logits. Returns ``{space: {method: {"cosine_to_truth": {attr: cos}, "separability":
    {attr: fraction of the N faces whose label (logit > 0) the axis's side gets right, in sample},
    "mean", "min", "argmin" (of the cosines), "fit_seconds", "fit_cpu_seconds"}}}`` plus ``"best"``:
    {space: the method with the highest mean cosine}. The truth is ``generator.true_axes(space=...)`` (in z, toyfaces-style gives the
    best linear axis, not an exact one).
    """
    from tlgan.axes.finders import make_finder

    attributes = list(attributes)
    out: dict = {"n": int(len(scores)), "attributes": attributes, "best": {}}
    for space, lat in latents.items():
        if len(lat) != len(scores):
            raise TlganError(f"{space!r} latents hold {len(lat)} rows for {len(scores)} scores")
        truth = generator.true_axes(space=space)
        per_method = {}
        for method in methods:
            finder = make_finder(method)
            wall, cpu = time.perf_counter(), time.process_time()
            finder.fit(lat, scores, attributes)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            axes = finder.to_feature_axes(space=space, generator=generator.name)
            cos = {a: float(torch.dot(axes[a], truth[a])) for a in attributes if a in truth.attributes}
            worst = min(cos, key=cos.get)
            agree = (finder.decision_function(lat) > 0) == (torch.as_tensor(scores) > 0)
            per_method[method] = {
                "cosine_to_truth": cos,
                "separability": {a: float(agree[:, j].float().mean()) for j, a in enumerate(attributes)},
                "mean": float(np.mean(list(cos.values()))),
                "min": cos[worst],
                "argmin": worst,
                "fit_seconds": wall,
                "fit_cpu_seconds": cpu,
            }
        out[space] = per_method
        out["best"][space] = max(per_method, key=lambda m: per_method[m]["mean"])
    return out


__all__ = ["compare_finders", "linear_z_quality", "run_latents"]
