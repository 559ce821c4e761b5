"""Attributes in words added to a finished run, scored from its stored CLIP image embeddings.

A run sampled with a CLIP classifier holds each image's normalised embedding (the shards'
``embeddings``, (S, E) float16). A CLIP attribute's logit is linear in that embedding
(logit scale x embedding . (positive - negative text embedding)), so a new attribute costs one
text forward: :func:`add_text_attributes` stores its text direction (E,) and the model's logit
scale in ``RUN/text_attributes.safetensors``, in one atomic write (the shards and the manifest are
never touched, so a failed or interrupted call leaves the run as it was). From then on the run's
``attributes`` and ``scores()`` include it, as if it had been sampled with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tlgan.errors import TlganError
from tlgan.io import load_tensors, save_tensors

if TYPE_CHECKING:
    from tlgan.sampling.run import Run

FILE = "text_attributes.safetensors"
FORMAT = "tlgan.text-attributes/1"


@dataclass(frozen=True)
class TextAttributes:
    """Attributes added to a run: ``names`` (A',), ``directions`` (A', E) float32, the model's
    ``logit_scale``, and ``prompts`` {name: Prompt JSON} (what rebuilds them)."""

    names: tuple[str, ...]
    directions: torch.Tensor
    logit_scale: float
    prompts: dict[str, Any]

    def scores(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, E) stored embeddings (float16) -> (N, A') float32 logits."""
        return self.logit_scale * (embeddings.float() @ self.directions.T)


def read_text_attributes(run_path: str | Path) -> TextAttributes | None:
    """The attributes added to the run in ``run_path``, or None when none were."""
    path = Path(run_path) / FILE
    if not path.is_file():
        return None
    tensors, meta = load_tensors(path)
    if meta.get("format") != FORMAT or "directions" not in tensors:
        raise TlganError(f"{path}: not a tlgan text-attributes file; remove it to drop the added attributes")
    return TextAttributes(
        tuple(meta["names"]), tensors["directions"].float(), float(meta["logit_scale"]), dict(meta["prompts"])
    )


def require_embeddings(run: Run) -> dict[str, Any]:
    """The run's ``embeddings`` record, or a TlganError that says how to get a run that has it."""
    record = run.manifest.get("embeddings")
    if not record:
        raise TlganError(
            f"{run.path} holds no image embeddings (it was sampled with classifier {run.classifier!r}), "
            f"so attributes in words cannot be added without generating it again; sample a run with "
            f"a CLIP classifier: tlgan sample --classifier clip:MODEL --out RUN (clip: alone is the "
            f"bundled toyfaces-clip)"
        )
    return record


def add_text_attributes(
    run: Run,
    prompts: Mapping[str, Any] | Sequence[str],
    classifier=None,
    device: str = "cpu",
) -> list[str]:
    """Add attributes in words to the finished ``run``; returns their names, in order.

    ``prompts``: {name: Prompt or {"positive", "negative"?, "templates"?}} or a list of
    ``"Name=positive|negative"`` (see :func:`tlgan.models.clip.as_prompts`). ``classifier`` is the
    run's CLIP classifier if already loaded (a server keeps it), else it is loaded from the run's
    spec. No image is generated: each phrase costs a text forward. Raises TlganError, before
    anything is written, for a run without embeddings, a name that the run already has, an empty
    phrase, a phrase longer than the model's context, or a classifier whose embedding size is not
    the run's.
    """
    from tlgan.models.clip import as_prompts

    record = require_embeddings(run)
    parsed = as_prompts(prompts)
    if not parsed:
        raise TlganError(
            "no attribute given; write e.g. --attribute 'Hat=a person wearing a hat|a bareheaded person'"
        )
    clash = [name for name in parsed if name in run.attributes]
    if clash:
        raise TlganError(
            f"{run.path} already has attribute(s) {', '.join(clash)}; choose other names "
            f"(its attributes: {', '.join(run.attributes)})"
        )
    if classifier is None:
        classifier = run.load_classifier(device)
    if int(getattr(classifier, "embedding_dim", -1)) != int(record["dim"]):
        raise TlganError(
            f"the classifier embeds into {getattr(classifier, 'embedding_dim', None)} dimensions but {run.path} "
            f"stores {record['dim']}; use the run's own classifier ({run.classifier})"
        )
    directions = classifier.text_directions(parsed).float().cpu()  # raises for empty / too long phrases
    before = read_text_attributes(run.path)
    names = list(before.names) if before else []
    old = before.directions if before else directions.new_zeros(0, directions.shape[1])
    stored = dict(before.prompts) if before else {}
    stored.update({name: prompt.to_json() for name, prompt in parsed.items()})
    save_tensors(
        run.path / FILE,
        {"directions": torch.cat([old, directions])},
        {
            "format": FORMAT,
            "names": names + list(parsed),
            "logit_scale": before.logit_scale if before else classifier.logit_scale,
            "prompts": stored,
            "classifier": run.classifier,
        },
    )
    return list(parsed)


def merge_axes(existing, added):
    """``existing`` FeatureAxes with ``added`` appended (same space and generator); TlganError otherwise."""
    import torch

    from tlgan.axes import FeatureAxes

    if existing.space != added.space or existing.generator != added.generator:
        raise TlganError(
            f"the axes file holds {existing.generator!r} axes in {existing.space!r}, the run's are "
            f"{added.generator!r} in {added.space!r}; write the new axes to another --out"
        )
    clash = [a for a in added.attributes if a in existing.attributes]
    if clash:
        raise TlganError(f"the axes file already has axes named {', '.join(clash)}; choose other names")
    method = existing.method if existing.method == added.method else f"{existing.method}+{added.method}"
    return FeatureAxes(
        torch.cat([existing.vectors, added.vectors]),
        existing.attributes + added.attributes,
        existing.space,
        existing.generator,
        method,
        {**existing.metrics, **added.metrics},
        {
            **existing.info,
            "added": {**existing.info.get("added", {}), **dict.fromkeys(added.attributes, added.method)},
        },
    )
