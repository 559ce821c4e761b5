"""tlgan: transparent latent spaces for pretrained image generators.

The main verbs are here, at the top::

    import tlgan

    G = tlgan.load_generator("toyfaces-gan")              # a Generator: z (N, 512) -> images
    F = tlgan.load_classifier("toyfaces-classifier")      # a Classifier: images -> logits (N, A)
    run = tlgan.sample(G, F, 2000, "runs/a", seed=0)      # a run folder: latents + scores
    axes = tlgan.fit_axes(run, "logistic")                # FeatureAxes (A, 512), one per attribute
    z = G.sample_latents(4, seed=1)
    images = tlgan.draw_latents(G, tlgan.edit_latents(z, axes, {"Smiling": 2.0}, locks=["Male"]))

The pipeline, one sub-package per step: ``models`` (generators and classifiers we wrap),
``toyfaces`` (the offline world with ground truth), ``sampling`` (z -> image -> scores,
cached in run folders), ``axes`` (fitting and disentangling feature axes), ``editing``,
``inversion`` (photos -> latents), ``evaluation`` (metrics and reports), ``studio`` (web app),
``cli``.

The names below are imported on first use, so ``import tlgan`` stays light (no torch) for the
command line, and no sub-module's own ``import tlgan`` can form an import cycle.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS = {
    "load_generator": "tlgan.models",
    "load_classifier": "tlgan.models",
    "Generator": "tlgan.models",
    "Classifier": "tlgan.models",
    "sample": "tlgan.sampling",
    "open_run": "tlgan.sampling",
    "Run": "tlgan.sampling",
    "LocalEngine": "tlgan.sampling",
    "RayEngine": "tlgan.sampling",
    "fit_axes": "tlgan.pipeline",
    "FeatureAxes": "tlgan.axes",
    "edit_latents": "tlgan.editing.edit",
    "draw_latents": "tlgan.editing.edit",
    "invert": "tlgan.inversion",
    "write_report": "tlgan.evaluation.report",
    "TlganError": "tlgan.errors",
}

__all__ = [
    "__version__",
    "load_generator",
    "load_classifier",
    "Generator",
    "Classifier",
    "sample",
    "open_run",
    "Run",
    "LocalEngine",
    "RayEngine",
    "fit_axes",
    "FeatureAxes",
    "edit_latents",
    "draw_latents",
    "invert",
    "write_report",
    "TlganError",
]

if TYPE_CHECKING:  # what static tools and IDEs see; at run time __getattr__ imports on demand
    from tlgan.axes import FeatureAxes
    from tlgan.editing.edit import draw_latents, edit_latents
    from tlgan.errors import TlganError
    from tlgan.evaluation.report import write_report
    from tlgan.inversion import invert
    from tlgan.models import Classifier, Generator, load_classifier, load_generator
    from tlgan.pipeline import fit_axes
    from tlgan.sampling import LocalEngine, RayEngine, Run, open_run, sample


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tlgan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
