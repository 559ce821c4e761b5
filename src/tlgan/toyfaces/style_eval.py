"""Measurements on ``toyfaces-style``: how linear z is, and which finder recovers the truth in z and w.

Pure functions returning plain dicts. The finder comparison itself is general (any generator
that knows its truth in several spaces) and lives in :mod:`tlgan.evaluation.spaces`; it is
re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch

from tlgan.errors import TlganError
from tlgan.evaluation.spaces import compare_finders, run_latents


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


__all__ = ["compare_finders", "linear_z_quality", "run_latents"]
