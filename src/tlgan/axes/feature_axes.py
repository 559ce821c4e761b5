"""FeatureAxes: a set of unit attribute directions with their provenance and metrics."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.io import load_tensors, save_tensors
from tlgan.registry import unknown_name_message

FORMAT = "tlgan.axes/1"


@dataclass
class FeatureAxes:
    """Unit vectors ``vectors`` (A, D), one per name in ``attributes``, in latent ``space``.

    ``axes["Smiling"]`` is one axis (D,); ``generator`` names the generator they belong to and
    ``method`` the finder that fitted them. ``metrics`` maps attribute -> {metric name: float}
    (for example val_accuracy, cosine_to_truth); ``info`` holds anything else worth keeping (fit
    options, N). ``save(path)`` / ``FeatureAxes.load(path)`` write and read a safetensors file
    with all of it. Raises TlganError for vectors that are not (A, D) with A names, or hold
    NaN or infinity, and for unknown attribute names (with close matches).
    """

    vectors: torch.Tensor
    attributes: list[str]
    space: str = "z"
    generator: str = "unknown"
    method: str = "unknown"
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.vectors = torch.as_tensor(self.vectors, dtype=torch.float32)
        self.attributes = list(self.attributes)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.attributes):
            raise TlganError(
                f"axes need shape (A, D) with A={len(self.attributes)} names; got {tuple(self.vectors.shape)}"
            )
        if not torch.isfinite(self.vectors).all():
            raise TlganError("axes contain NaN or infinite values")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def index(self, attribute: str) -> int:
        if attribute not in self.attributes:
            raise TlganError(unknown_name_message("attribute", attribute, self.attributes))
        return self.attributes.index(attribute)

    def __getitem__(self, attribute: str) -> torch.Tensor:
        return self.vectors[self.index(attribute)]

    def subset(self, attributes: Sequence[str]) -> FeatureAxes:
        idx = [self.index(a) for a in attributes]
        return FeatureAxes(
            self.vectors[idx],
            list(attributes),
            self.space,
            self.generator,
            self.method,
            {a: self.metrics[a] for a in attributes if a in self.metrics},
            dict(self.info),
        )

    def save(self, path: str | os.PathLike) -> None:
        save_tensors(
            path,
            {"vectors": self.vectors},
            {
                "format": FORMAT,
                "attributes": self.attributes,
                "space": self.space,
                "generator": self.generator,
                "method": self.method,
                "metrics": self.metrics,
                "info": self.info,
            },
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureAxes:
        tensors, meta = load_tensors(path)
        if meta.get("format") != FORMAT or "vectors" not in tensors:
            raise TlganError(
                f"{path}: not a tlgan axes file (expected format {FORMAT!r}); make one with `tlgan fit`"
            )
        return cls(
            tensors["vectors"],
            meta["attributes"],
            meta.get("space", "z"),
            meta.get("generator", "unknown"),
            meta.get("method", "unknown"),
            meta.get("metrics", {}),
            meta.get("info", {}),
        )
