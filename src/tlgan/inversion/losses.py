"""The reconstruction losses shared by the encoder's training, latent optimisation and pivotal tuning.

Every loss is per image, shape (N,), so that each image of a batch can be optimised (and
stop) on its own:

    loss = pixel_weight    * mean |G - x|^2                         (or |.| with pixel_loss="l1")
         + feature_weight  * feature_distance through classifier.features  (with a classifier)
         + gradient_weight * mean |d/dx (G - x)| + |d/dy (G - x)|   (without one)

The feature term works with any :class:`~tlgan.models.base.Classifier`: it calls the
classifier's ``features(images)`` hook (for a plain module wrapped in ``ModuleClassifier``,
the penultimate activations unless ``feature_layers`` names others). Without a classifier
the image-gradient term stands in for it: edges are what a pure pixel loss blurs first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tlgan.errors import TlganError
from tlgan.models.base import Classifier

log = logging.getLogger(__name__)

PIXEL_LOSSES = ("mse", "l1")


def pixel_distance(images: torch.Tensor, targets: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Per-image mean squared (``"mse"``) or absolute (``"l1"``) difference, (N,)."""
    diff = images - targets
    return (diff.abs() if kind == "l1" else diff.pow(2)).flatten(1).mean(1)


def image_gradient_distance(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-image L1 distance of horizontal and vertical neighbour differences (edges), (N,)."""
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]  # noqa: E731
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]  # noqa: E731
    return 0.5 * (
        (dx(images) - dx(targets)).abs().flatten(1).mean(1)
        + (dy(images) - dy(targets)).abs().flatten(1).mean(1)
    )


def classifier_features(classifier: Classifier, images: torch.Tensor) -> list[torch.Tensor]:
    """``classifier.features(images)`` as a non-empty list of (N, ...) tensors, with a clear error otherwise."""
    hook = getattr(classifier, "features", None)
    if not callable(hook):
        raise TlganError(
            f"{type(classifier).__name__} has no features(images) method, so it cannot give a "
            f"feature loss; wrap it as a tlgan Classifier (tlgan.models.ModuleClassifier) or set "
            f"feature_weight=0"
        )
    feats = hook(images)
    if isinstance(feats, torch.Tensor):
        feats = [feats]
    feats = list(feats)
    if not feats or not all(isinstance(f, torch.Tensor) and f.shape[:1] == images.shape[:1] for f in feats):
        raise TlganError(
            f"classifier {getattr(classifier, 'name', '?')!r}: features(images) must return a list "
            f"of tensors with one row per image"
        )
    return feats


def feature_distance(
    classifier: Classifier,
    images: torch.Tensor,
    targets: torch.Tensor | None = None,
    target_features: list[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Per-image perceptual distance (N,) through the classifier's ``features`` hook.

    For each feature tensor, the mean squared difference of the activations divided by the
    mean square of the target's activations (so every layer counts about the same whatever
    its scale), averaged over the layers. Give ``target_features`` to avoid recomputing them.
    """
    if target_features is None:
        if targets is None:
            raise TlganError("feature_distance needs targets or target_features")
        with torch.no_grad():
            target_features = [f.detach() for f in classifier_features(classifier, targets)]
    feats = classifier_features(classifier, images)
    total = images.new_zeros(images.shape[0])
    for f, t in zip(feats, target_features, strict=True):
        scale = t.pow(2).flatten(1).mean(1).clamp_min(1e-6)
        total = total + (f - t).pow(2).flatten(1).mean(1) / scale
    return total / max(1, len(feats))


@dataclass
class ReconstructionLoss:
    """The per-image loss of images against fixed ``targets`` (N, 3, R, R); call as ``loss(images, rows)``.

    ``rows`` (a LongTensor, or None for all) says which targets the images belong to, so a
    batch whose finished images dropped out still compares each image with its own target.
    Build it with :func:`reconstruction_loss`.
    """

    targets: torch.Tensor
    classifier: Classifier | None
    target_features: list[torch.Tensor] | None
    pixel_weight: float
    feature_weight: float
    gradient_weight: float
    pixel_loss: str

    def __call__(self, images: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        targets = self.targets if rows is None else self.targets[rows]
        loss = self.pixel_weight * pixel_distance(images, targets, self.pixel_loss)
        if self.classifier is not None:
            feats = self.target_features if rows is None else [f[rows] for f in self.target_features]
            loss = loss + self.feature_weight * feature_distance(
                self.classifier, images, target_features=feats
            )
        elif self.gradient_weight > 0:
            loss = loss + self.gradient_weight * image_gradient_distance(images, targets)
        return loss

    @property
    def terms(self) -> str:
        """A short description of the terms in use, for logs and reports."""
        extra = (
            f"features of {getattr(self.classifier, 'name', 'the classifier')!r}"
            if self.classifier is not None
            else ("image gradients" if self.gradient_weight > 0 else None)
        )
        return f"{self.pixel_loss} pixels" + (f" + {extra}" if extra else "")


def reconstruction_loss(
    targets: torch.Tensor,
    *,
    classifier: Classifier | None = None,
    pixel_weight: float = 1.0,
    feature_weight: float = 0.05,
    gradient_weight: float = 0.5,
    pixel_loss: str = "mse",
    announce: Callable[[str], None] | None = None,
) -> ReconstructionLoss:
    """The loss of :class:`ReconstructionLoss` for ``targets``; the classifier's target features computed once.

    With ``classifier`` None (or ``feature_weight`` 0) the feature term is replaced by the
    image-gradient term (``gradient_weight``); ``announce`` (e.g. ``log.info``) is told which.
    """
    if pixel_loss not in PIXEL_LOSSES:
        raise TlganError(f"pixel_loss must be 'mse' or 'l1', not {pixel_loss!r}")
    if classifier is None or feature_weight <= 0:
        classifier, feature_weight, feats = None, 0.0, None
    else:
        with torch.no_grad():
            feats = [f.detach() for f in classifier_features(classifier, targets)]
    loss = ReconstructionLoss(
        targets,
        classifier,
        feats,
        float(pixel_weight),
        float(feature_weight),
        float(gradient_weight),
        pixel_loss,
    )
    if announce is not None:
        announce(f"reconstruction loss: {loss.terms}")
    return loss
