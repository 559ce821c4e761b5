"""Naming unsupervised directions after the attribute each one moves (``pc3 ~ +Smiling``).

GANSpace and SeFa give components ``pc0``, ``pc1``, ... with no meaning attached. The classifier
can supply one: move many faces along each component (the report's edit effect,
:func:`tlgan.evaluation.metrics.edit_effect`), see which attribute's probability moves most, and
how cleanly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.evaluation.metrics import edit_effect
from tlgan.models.base import Classifier, Generator

log = logging.getLogger(__name__)

# A component "moves" an attribute when the attribute's probability changes by at least this
# much on average over the steps (probability units). Along a random unit direction of the
# 512-d toyfaces z a step of 2 moves no attribute's probability by more than a few points.
DEFAULT_MIN_CHANGE = 0.1


def profile_of(change: torch.Tensor, steps: Sequence[float], attributes: Sequence[str]) -> dict[str, Any]:
    """One component's attribute profile from its edit-effect ``change`` (S, C) at ``steps`` (S,).

    ``effect[c]`` = mean over steps of sign(step) * change[s, c] (signed: positive when moving
    along +component raises attribute c), ``size[c]`` = mean over steps of |change[s, c]|. The
    component's attribute is the one with the largest size; ``purity`` = its size over the sum of
    all sizes (1 = it moves nothing else). Returns {attribute, sign, target_change, purity,
    profile: {attribute: effect}, sizes: {attribute: size}}.
    """
    change = torch.as_tensor(change, dtype=torch.float64)
    signs = torch.sign(torch.as_tensor([float(s) for s in steps], dtype=torch.float64))
    moving = signs != 0
    if not bool(moving.any()):
        raise TlganError(f"naming needs at least one non-zero step; got {list(steps)}")
    effect = (signs[moving, None] * change[moving]).mean(0)
    size = change[moving].abs().mean(0)
    best = int(size.argmax())
    total = float(size.sum())
    return {
        "attribute": attributes[best],
        "sign": 1 if float(effect[best]) >= 0 else -1,
        "target_change": float(size[best]),
        "purity": float(size[best]) / total if total > 0 else 0.0,
        "profile": {a: float(v) for a, v in zip(attributes, effect.tolist(), strict=True)},
        "sizes": {a: float(v) for a, v in zip(attributes, size.tolist(), strict=True)},
    }


def name_directions(
    axes: FeatureAxes,
    generator: Generator,
    classifier: Classifier,
    latents: torch.Tensor,
    *,
    steps: Sequence[float] = (-2.0, 2.0),
    min_change: float = DEFAULT_MIN_CHANGE,
    rename: bool = True,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
) -> FeatureAxes:
    """Name each direction of ``axes`` after the classifier attribute it moves most.

    Every face of ``latents`` (M, D) is moved by each step along each direction (see
    :func:`~tlgan.evaluation.metrics.edit_effect`); a direction's profile is the signed mean change
    of every attribute's probability (:func:`profile_of`). Its label is ``"pc3 ≈ +Smiling"`` (moving
    along +pc3 makes faces smile) or ``"pc46: moves no attribute"`` when no attribute changes by
    ``min_change`` or more.

    With ``rename``, the purest direction of each named attribute takes the attribute's name
    and is turned so that + raises the attribute (the studio then shows that attribute's
    probability beside it); every other direction keeps its name and orientation.

    Returns new axes (the input is not changed). ``info["naming"]`` holds the settings and, per
    original name, {name, label, attribute (None when unnamed), sign, target_change, purity,
    profile, sizes}; each direction's metrics gain ``purity`` and ``target_change``.
    """
    if not float(min_change) >= 0:
        raise TlganError(f"min_change must be >= 0 (probability units); got {min_change}")
    if len(latents) == 0:
        raise TlganError("naming needs faces to edit: give at least one latent")
    steps = [float(s) for s in steps]
    effect = edit_effect(
        generator,
        classifier,
        axes,
        latents,
        steps,
        (),
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    attributes = list(classifier.attributes)
    entries: dict[str, dict[str, Any]] = {}
    for name in axes.attributes:
        entry = profile_of(torch.tensor(effect["unlocked"][name]["change"]), steps, attributes)
        if entry["target_change"] < float(min_change):
            entry.update({"attribute": None, "sign": None, "label": f"{name}: moves no attribute"})
        else:
            entry["label"] = f"{name} ≈ {'+' if entry['sign'] > 0 else '-'}{entry['attribute']}"
        entry["name"] = name
        entries[name] = entry

    vectors = axes.vectors.clone()
    names = list(axes.attributes)
    if rename:
        taken = set(names)
        best: dict[str, str] = {}
        for name, entry in entries.items():
            attr = entry["attribute"]
            if attr is not None and (attr not in best or entry["purity"] > entries[best[attr]]["purity"]):
                best[attr] = name
        for attr, name in best.items():
            if attr in taken:  # an axis of that name exists already (e.g. a supervised one): keep ours as is
                continue
            i = names.index(name)
            names[i] = attr
            taken.add(attr)
            vectors[i] *= entries[name]["sign"]
            entries[name]["name"] = attr
    metrics = {}
    for old, new in zip(axes.attributes, names, strict=True):
        metrics[new] = dict(axes.metrics.get(old, {}))
        metrics[new].update(
            {"purity": entries[old]["purity"], "target_change": entries[old]["target_change"]}
        )
    info = dict(axes.info)
    info["naming"] = {
        "classifier": getattr(classifier, "name", "unknown"),
        "faces": int(len(latents)),
        "steps": steps,
        "min_change": float(min_change),
        "rename": bool(rename),
        "components": entries,
    }
    named = sum(e["attribute"] is not None for e in entries.values())
    log.info(
        "named %d of %d directions (%d move no attribute by %.2f or more)",
        named,
        len(entries),
        len(entries) - named,
        min_change,
    )
    return FeatureAxes(vectors, names, axes.space, axes.generator, axes.method, metrics, info)


def naming_table(axes: FeatureAxes) -> dict[str, dict[str, Any]] | None:
    """The per-direction naming entries of axes from :func:`name_directions` (None if never named)."""
    naming = axes.info.get("naming")
    return None if not naming else naming.get("components")


__all__ = ["DEFAULT_MIN_CHANGE", "name_directions", "naming_table", "profile_of"]
