"""The edit effect: what moving along each axis does to every attribute the classifier reads.

Pure measurements (no file I/O) in the conventions of :mod:`tlgan.evaluation.metrics`, which
names them too: ``latents`` (M, D) in the axes' space, probabilities are sigmoid(logit), a
change of probability is in probability units.

- :func:`edit_effect`: per axis and step, the mean change of every attribute's probability,
  free and with locks, and one entanglement ratio per axis;
- :func:`lock_demo_change`: the locking demonstration of a pair (attribute, lock) chosen by the
  caller: how much removing the attribute moves the lock, free and with the lock held.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.models.base import Classifier, Generator

# Below this mean |target change| an axis did not move its own attribute, and a ratio
# against it would be noise divided by noise.
MIN_TARGET_CHANGE = 1e-4


# --------------------------------------------------------------------------- edit effect
@torch.inference_mode()
def classifier_probabilities(
    generator: Generator,
    classifier: Classifier,
    latents: torch.Tensor,
    *,
    space: str = "z",
    batch_size: int = 64,
    device: str = "cpu",
) -> torch.Tensor:
    """sigmoid(classifier(generator(latents))): (N, C) float64 on CPU, in batches of ``batch_size``."""
    parts = []
    for start in range(0, len(latents), batch_size):
        images = generator.synthesize(latents[start : start + batch_size].to(device), space)
        parts.append(classifier.probabilities(images).double().cpu())
    return torch.cat(parts)


def _summarise_axis(change: torch.Tensor, target: int | None, names: Sequence[str]) -> dict[str, Any]:
    """change (S, C) mean probability changes for one axis -> the per-axis entry of edit_effect."""
    entry: dict[str, Any] = {"change": [[float(v) for v in row] for row in change.tolist()]}
    if target is None:
        entry.update(
            {
                "target_change": None,
                "largest_off_target": None,
                "largest_off_target_attribute": None,
                "mean_off_target": None,
                "ratio": None,
            }
        )
        return entry
    off = [c for c in range(change.shape[1]) if c != target]
    entry["target_change"] = [float(v) for v in change[:, target]]
    if not off:
        entry.update(
            {
                "largest_off_target": None,
                "largest_off_target_attribute": None,
                "mean_off_target": None,
                "ratio": None,
            }
        )
        return entry
    off_change = change[:, off]
    worst = off_change.abs().argmax(dim=1)
    entry["largest_off_target"] = [float(off_change[s, worst[s]]) for s in range(len(change))]
    entry["largest_off_target_attribute"] = [names[off[int(worst[s])]] for s in range(len(change))]
    entry["mean_off_target"] = [float(v) for v in off_change.abs().mean(dim=1)]
    # One number per axis: each attribute's effect size is its mean |change| over the steps;
    # the ratio compares the most affected other attribute with the target.
    size = change.abs().mean(dim=0)
    entry["ratio"] = float(size[off].max() / size[target]) if size[target] > MIN_TARGET_CHANGE else None
    entry["most_entangled_attribute"] = names[off[int(size[off].argmax())]]
    return entry


def _axis_changes(
    generator,
    classifier,
    axes,
    base_latents,
    base_probs,
    names,
    steps,
    locks,
    space,
    batch_size,
    device,
    progress,
    desc,
) -> dict[str, dict[str, Any]]:
    from tlgan.editing.edit import edit_latents

    out = {}
    for name in tqdm(names, desc=desc, disable=not progress, leave=False):
        moved = torch.cat(
            [edit_latents(base_latents, axes, {name: float(step)}, list(locks)) for step in steps]
        )
        probs = classifier_probabilities(
            generator, classifier, moved, space=space, batch_size=batch_size, device=device
        )
        change = (probs.view(len(steps), len(base_latents), -1) - base_probs[None]).mean(dim=1)
        target = classifier.attributes.index(name) if name in classifier.attributes else None
        out[name] = _summarise_axis(change, target, list(classifier.attributes))
    return out


def edit_effect(
    generator: Generator,
    classifier: Classifier,
    axes: FeatureAxes,
    latents: torch.Tensor,
    steps: Sequence[float] = (-2.0, 2.0),
    locks: Sequence[str] = (),
    *,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = False,
    lock_demo: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """What moving along each axis does to every attribute the classifier reads.

    For each axis a and each step s, every one of the M faces ``latents`` (M, D) is moved to
    z + s * u_a, rendered and classified; the entry is the mean over the faces of the change of
    each attribute's probability (``change``: (S, C) nested list, probability units). From it:

    - ``target_change`` (per step): the change of a's own probability;
    - ``largest_off_target`` / ``_attribute`` (per step): the other attribute that moved most, signed;
    - ``mean_off_target`` (per step): mean |change| of the other attributes;
    - ``ratio``: entanglement, max over other attributes c of mean_s |change_c| divided by
      mean_s |change_a| (0 = a clean edit; None when the target did not move at all).

    This is done twice: ``unlocked`` with u_a the raw axis, and ``locked`` with u_a made
    orthogonal to the ``locks`` axes (an axis that is itself locked is skipped there; with no
    locks the locked variant is the unlocked one and is not recomputed). ``entanglement`` gathers
    {ratio, ratio_locked} per axis. ``lock_demo`` = (attribute, lock), a pair of attribute names
    chosen by the caller, adds the locking demonstration under :func:`lock_demo_key` (e.g.
    ``male_change_beard_minus``) when both are axes and the classifier reads the lock: the mean
    change of P(lock) for the edit "attribute -max|s|" with and without the lock held fixed (see
    :func:`lock_demo_change`).

    Cost: M * (1 + S * A + S * (A - locked)) generator and classifier passes (+ 2 M for the demo).
    """
    latents = generator.check_latents(latents, axes.space).float().cpu()
    steps = [float(s) for s in steps]
    if not steps:
        raise TlganError("edit effect needs at least one step, e.g. steps=(-2, 2)")
    if not all(math.isfinite(s) for s in steps):
        raise TlganError(f"edit steps must be finite numbers; got {steps}")
    locks = list(dict.fromkeys(locks))
    for name in locks:
        axes.index(name)  # unknown lock -> TlganError with close matches
    space = axes.space
    names = list(axes.attributes)
    base = classifier_probabilities(
        generator, classifier, latents, space=space, batch_size=batch_size, device=device
    )
    common = dict(
        base_latents=latents,
        base_probs=base,
        steps=steps,
        space=space,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    unlocked = _axis_changes(generator, classifier, axes, names=names, locks=(), desc="edit effect", **common)
    if locks:
        free_names = [n for n in names if n not in locks]
        locked = _axis_changes(
            generator, classifier, axes, names=free_names, locks=locks, desc="edit effect (locked)", **common
        )
    else:
        locked = unlocked
    entanglement = {}
    for name in names:
        entanglement[name] = {
            "ratio": unlocked[name]["ratio"],
            "ratio_locked": locked[name]["ratio"] if name in locked else None,
        }
    result: dict[str, Any] = {
        "attributes": list(classifier.attributes),
        "axes": names,
        "steps": steps,
        "faces": int(len(latents)),
        "locks": locks,
        "baseline_probability": {
            a: float(p) for a, p in zip(classifier.attributes, base.mean(0).tolist(), strict=True)
        },
        "unlocked": unlocked,
        "locked": locked if locks else {},
        "entanglement": entanglement,
    }
    if lock_demo is not None and set(lock_demo) <= set(names) and lock_demo[1] in classifier.attributes:
        result[lock_demo_key(lock_demo)] = lock_demo_change(
            generator,
            classifier,
            axes,
            latents,
            lock_demo,
            step=-max(abs(s) for s in steps),
            base_probs=base,
            batch_size=batch_size,
            device=device,
        )
    return result


def lock_demo_key(pair: tuple[str, str]) -> str:
    """The result key of the locking demonstration of ``pair`` = (attribute, lock).

    ("Beard", "Male") -> ``male_change_beard_minus``: the change of the lock for "attribute -".
    """
    attribute, lock = pair
    return f"{lock.lower()}_change_{attribute.lower()}_minus"


def lock_demo_change(
    generator: Generator,
    classifier: Classifier,
    axes: FeatureAxes,
    latents: torch.Tensor,
    pair: tuple[str, str],
    step: float = -2.0,
    *,
    base_probs: torch.Tensor | None = None,
    batch_size: int = 64,
    device: str = "cpu",
) -> dict[str, Any]:
    """Mean change of P(lock) over the faces when moving ``attribute`` by ``step``, unlocked vs locked.

    ``pair`` = (attribute, lock), two axis names; the classifier must read the lock. When the
    attribute leans on the lock in the data (a beard on being male, say), moving along the raw
    axis also moves the lock; locking it removes that component. ``latents`` (M, D) in
    ``axes.space``. ``reduction`` = 1 - |locked| / |unlocked| (1 = the side effect is gone),
    ``at_least_halved`` says whether |locked| <= |unlocked| / 2; when the classifier also reads
    the attribute, ``<attribute>_change_unlocked`` / ``_locked`` give its own change.
    """
    from tlgan.editing.edit import edit_latents

    attribute, lock = pair
    lock_idx = classifier.attribute_index(lock)
    if base_probs is None:
        base_probs = classifier_probabilities(
            generator, classifier, latents, space=axes.space, batch_size=batch_size, device=device
        )
    moved = torch.cat(
        [
            edit_latents(latents, axes, {attribute: float(step)}),
            edit_latents(latents, axes, {attribute: float(step)}, [lock]),
        ]
    )
    probs = classifier_probabilities(
        generator, classifier, moved, space=axes.space, batch_size=batch_size, device=device
    )
    change = (probs.view(2, len(latents), -1)[:, :, lock_idx] - base_probs[None, :, lock_idx]).mean(dim=1)
    unlocked, locked = float(change[0]), float(change[1])
    out = {
        "step": float(step),
        "unlocked": unlocked,
        "locked": locked,
        "reduction": (1.0 - abs(locked) / abs(unlocked)) if abs(unlocked) > 1e-12 else None,
        "at_least_halved": bool(abs(locked) <= 0.5 * abs(unlocked)),
    }
    if attribute in classifier.attributes:
        own = classifier.attribute_index(attribute)
        own_change = (probs.view(2, len(latents), -1)[:, :, own] - base_probs[None, :, own]).mean(dim=1)
        out[f"{attribute.lower()}_change_unlocked"] = float(own_change[0])
        out[f"{attribute.lower()}_change_locked"] = float(own_change[1])
    return out
