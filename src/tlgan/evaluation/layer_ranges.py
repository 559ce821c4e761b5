"""Which wp layers carry an attribute: edit one layer range at a time and read the classifier.

For a style-based generator, a w axis can be applied to all of wp's layers (the same as editing
w), to a chosen range, or to the layers outside it. If ``layers`` is the attribute's true range,
editing it moves the classifier's score almost as much as editing all layers, and editing the
rest hardly moves it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.models.base import Classifier, Generator


def layer_range_effects(
    generator: Generator,
    classifier: Classifier,
    axes: FeatureAxes,
    layers: Mapping[str, Sequence[int]],
    *,
    faces: int = 64,
    seed: int = 0,
    step: float = 1.5,
    batch_size: int = 128,
    device: str = "cpu",
) -> dict:
    """The classifier's response to each attribute's w axis applied to its layers, all layers, the others.

    ``axes`` are fitted in (or true in) ``w``; ``layers`` maps each attribute to measure to its
    wp layer indices (a toyfaces-style generator's true ranges are in
    ``generator.true_axes(space="w").info["layers"]``, lists of layer indices). For the
    first ``faces`` samples of ``seed`` (in w, turned into wp), each face is moved by ``+step``
    and ``-step`` along the unit axis on the chosen layers; the *effect* is the mean over faces
    of (logit(+step) - logit(-step)) / 2 for the attribute's classifier output.

    Returns ``{"faces", "step", "attributes": {name: {"layers", "effect_all", "effect_own",
    "effect_other", "own_ratio", "other_ratio"}}}`` with ``own_ratio = effect_own / effect_all``
    and ``other_ratio = |effect_other| / effect_all`` (None when ``effect_all`` is not positive).
    Raises TlganError when the generator has no wp space, the axes are not in w, or an attribute
    is unknown to the axes or the classifier, or its layers fall outside 0..num_ws-1.
    """
    generator.check_space("wp")
    if axes.space != "w":
        raise TlganError(f"layer ranges need axes fitted in w; these are in {axes.space!r}")
    if faces < 1:
        raise TlganError(f"faces must be >= 1 (got {faces})")
    num_ws = generator.num_ws
    w = generator.sample_latents(faces, seed=seed, space="w").to(device)
    with torch.inference_mode():
        wp = generator.map_latents(w, "w", "wp")
    out: dict = {"faces": faces, "step": step, "attributes": {}}
    for name, own in layers.items():
        own = sorted({int(k) for k in own})
        if not own or own[0] < 0 or own[-1] >= num_ws:
            raise TlganError(f"layers of {name!r} must be within 0..{num_ws - 1}; got {own}")
        if name not in axes.attributes:
            raise TlganError(f"the axes have no attribute {name!r}; they have {', '.join(axes.attributes)}")
        column = classifier.attribute_index(name)
        direction = axes[name].to(device=device, dtype=wp.dtype)
        ranges = {"all": list(range(num_ws)), "own": own, "other": [k for k in range(num_ws) if k not in own]}
        effects = {}
        for key, chosen in ranges.items():
            if not chosen:
                effects[key] = 0.0
                continue
            mask = torch.zeros(num_ws, 1, dtype=wp.dtype, device=device)
            mask[chosen] = 1.0
            moved = torch.cat([wp + step * mask * direction, wp - step * mask * direction])
            logits = []
            with torch.inference_mode():
                for start in range(0, len(moved), batch_size):
                    images = generator.synthesize(moved[start : start + batch_size], "wp")
                    logits.append(classifier.logits(images)[:, column].float().cpu())
            logit = torch.cat(logits)
            effects[key] = float((logit[:faces] - logit[faces:]).mean() / 2)
        total = effects["all"]
        out["attributes"][name] = {
            "layers": own,
            "effect_all": total,
            "effect_own": effects["own"],
            "effect_other": effects["other"],
            "own_ratio": effects["own"] / total if total > 0 else None,
            "other_ratio": abs(effects["other"]) / total if total > 0 else None,
        }
    return out
