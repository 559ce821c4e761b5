"""Where the translation route wins and where it fails, against the toyfaces world's true edits.

Fresh renders (never seen in training: the translation networks learn from the bundled GAN's
images only) are edited three ways and compared with the renderer's own edit of the same face,
``render(z + amount * true_axis)``:

- ``translate``: the translation model, one forward pass on the render;
- ``invert_edit``: invert the render into the GAN's z (encoder + optimisation), move the latent
  along the model's axis by the same amount, draw it;
- ``tuned_edit``: the same after pivotal tuning of the GAN on the render.

For each attribute: PSNR against the true edit, seconds per image (the inversion and tuning of
a face are paid once and shared by every attribute: each method's figure is its whole cost for
one image and one edit), preservation (the mean absolute change of pixels outside the part the
true edit redraws, a mask the world gives), and continuity (whether the classifier's
probability of the attribute rises monotonically along amounts 0, A/4, ..., A, per image, and the
mean share of the full edit's pixel change drawn at each amount; for the faces where it does
not, how far it falls, in probability and in logit, and where they start: :func:`dip_report`).

``baselines=False`` runs the translation alone (no inversion, no tuning: seconds instead of
most of an hour on a CPU); ``blend`` picks how amounts between 0 and A are drawn
(:func:`tlgan.translate.translate`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.delta.warp import factor_axis
from tlgan.editing.edit import edit_latents
from tlgan.errors import TlganError
from tlgan.inversion.encoder import psnr_db
from tlgan.models.base import Classifier, Generator, latent_rng_normal
from tlgan.toyfaces import world
from tlgan.translate.model import TranslationModel, translate

log = logging.getLogger(__name__)

#: The attributes of the published comparison: four local appearance changes and two large
#: movements (smile and pose) where InterFaceGAN expects the translation route to fail.
EVAL_ATTRIBUTES = ("Eyeglasses", "Beard", "Wearing_Lipstick", "Gray_Hair", "Smiling", "yaw")
#: Renders of the evaluation use samples from here on of their seed (far from any training draw).
FIRST_INDEX = 1_000_000
MASK_THRESHOLD = 0.04
"""A pixel belongs to the edited part when the true edit changes a channel by more than this (of 2)."""


def true_axis(name: str) -> torch.Tensor:
    """The world's unit direction (512,) of an attribute (``Beard``) or a nuisance (``yaw``)."""
    return factor_axis(world.FACTOR_OF.get(name, name)).clone()


def with_yaw(axes: FeatureAxes) -> FeatureAxes:
    """``axes`` (in z of a world-latent generator) plus a ``yaw`` axis, the world's own direction.

    The classifier has no pose attribute, so no axis can be fitted for yaw; the closest axis
    is the true one, which a generator sharing the world's latents (toyfaces-gan) moves along.
    """
    if "yaw" in axes.attributes:
        return axes
    if axes.space != "z" or axes.dim != world.Z_DIM:
        raise TlganError("a yaw axis can only be added to z axes of the toyfaces world (512-d)")
    vectors = torch.cat([axes.vectors, true_axis("yaw")[None]])
    return FeatureAxes(
        vectors,
        [*axes.attributes, "yaw"],
        space="z",
        generator=axes.generator,
        method=axes.method,
        metrics=dict(axes.metrics),
        info=dict(axes.info),
    )


def edited_part(source: torch.Tensor, target: torch.Tensor, dilate: int = 1) -> torch.Tensor:
    """(N, 1, R, R) bool: pixels the true edit changes (any channel by > :data:`MASK_THRESHOLD`), grown by ``dilate`` px."""
    changed = (target - source).abs().amax(1, keepdim=True) > MASK_THRESHOLD
    if dilate > 0:
        changed = F.max_pool2d(changed.float(), 2 * dilate + 1, stride=1, padding=dilate) > 0
    return changed


def outside_change(images: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) mean absolute change of ``images`` from ``source`` over the pixels outside ``mask`` (on [0, 1])."""
    keep = (~mask).float()
    diff = ((images.clamp(-1, 1) - source).abs() / 2).mean(1, keepdim=True)
    return (diff * keep).flatten(1).sum(1) / keep.flatten(1).sum(1).clamp_min(1)


def _batched(fn, tensor: torch.Tensor, batch: int = 50) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(tensor[i : i + batch]) for i in range(0, len(tensor), batch)])


def evaluate_translation(
    models: Mapping[str, TranslationModel],
    axes: FeatureAxes,
    generator: Generator,
    renderer: Generator,
    classifier: Classifier,
    *,
    n: int = 100,
    seed: int = 0,
    invert_steps: int | None = None,
    tune_steps: int | None = None,
    tune: bool = True,
    continuity_steps: int = 5,
    baselines: bool = True,
    blend: str = "outputs",
    progress: bool = True,
) -> dict[str, Any]:
    """The comparison for each model (attribute -> model), on ``n`` fresh renders; a JSON-ready dict.

    ``axes`` are the z axes the models were trained with (see :func:`with_yaw`); the GAN edits
    of the baselines move along them with each model's locks. ``generator`` is the GAN the
    models were trained on (its z must be the world's latent, as toyfaces-gan's is),
    ``renderer`` the analytic toyfaces renderer. Without ``baselines`` the entries hold
    ``translate`` and ``no_edit`` only (``invert_edit``, ``tuned_edit`` and the speed-up are
    left out, and so is the inversion in the header).
    """
    if not models:
        raise TlganError("no translation models to evaluate")
    z = world_latents(n, seed)
    with torch.no_grad():
        sources = _batched(lambda b: renderer.synthesize(b, "z"), z)
    out: dict[str, Any] = {
        "n": n,
        "seed": seed,
        "generator": getattr(generator, "name", "?"),
        "blend": blend,
        "schedules": {name: model.schedule is not None for name, model in models.items()},
        "attributes": {},
    }
    if baselines:
        moved, tuned_edits, header = _baselines(
            models, axes, generator, classifier, sources, n, seed, invert_steps, tune_steps, tune, progress
        )
        out.update(header)
    for name, model in models.items():
        amount = float(model.amount)
        with torch.no_grad():
            targets = _batched(
                lambda b, a=amount, nm=name: renderer.synthesize(b + a * true_axis(nm), "z"), z
            )
        mask = edited_part(sources, targets)
        prob = None
        if name in classifier.attributes:
            index = classifier.attributes.index(name)

            def prob(images, index=index):
                return _batched(lambda b: classifier.probabilities(b)[:, index], images)

        t0 = time.perf_counter()
        translated = translate(sources, model, amount, blend=blend)
        translate_seconds = (time.perf_counter() - t0) / n
        entry: dict[str, Any] = {
            "amount": amount,
            "edited_fraction": float(mask.float().mean()),
            "target_probability": None if prob is None else float(prob(targets).mean()),
            "translate": _scores(translated, targets, sources, mask, translate_seconds, prob),
            "no_edit": _scores(sources, targets, sources, mask, 0.0, prob),
        }
        if baselines:
            t0 = time.perf_counter()
            invert_edit = _batched(lambda b: generator.synthesize(b, "z"), moved[name])
            draw_seconds = (time.perf_counter() - t0) / n
            invert_seconds = out["invert_seconds_per_image"]
            entry["invert_edit"] = _scores(
                invert_edit, targets, sources, mask, invert_seconds + draw_seconds, prob
            )
            if tune:
                entry["tuned_edit"] = _scores(
                    torch.cat(tuned_edits[name]),
                    targets,
                    sources,
                    mask,
                    invert_seconds + out["tune_seconds_per_image"] + draw_seconds,
                    prob,
                )
            entry["speedup_over_invert_edit"] = entry["invert_edit"]["seconds_per_image"] / max(
                translate_seconds, 1e-9
            )
        entry["continuity"] = _continuity(model, sources, classifier, name, amount, continuity_steps, blend)
        entry["true_edit_continuity"] = true_continuity(
            z, renderer, classifier, name, amount, continuity_steps
        )
        out["attributes"][name] = entry
        log.info("%s: translate %.2f dB", name, entry["translate"]["psnr_db"])
    return out


def _baselines(
    models, axes, generator, classifier, sources, n, seed, invert_steps, tune_steps, tune, progress
):
    """The inverted latents moved by each model's edit, the tuned generators' edits, and the header
    (inversion PSNR, seconds per image of inversion and tuning)."""
    from tlgan.inversion.optimize import DEFAULT_STEPS, invert
    from tlgan.inversion.tune import DEFAULT_TUNE_STEPS, tune_generator
    from tlgan.models.zoo import bundled_encoder

    t0 = time.perf_counter()
    inverted = invert(
        generator,
        sources,
        encoder=bundled_encoder(generator),
        classifier=classifier,
        steps=DEFAULT_STEPS if invert_steps is None else invert_steps,
        progress=progress,
    )
    invert_seconds = (time.perf_counter() - t0) / n
    moved = {}
    for name, model in models.items():
        locks = [lk for lk in model.record.get("locks", []) if lk in axes.attributes]
        moved[name] = edit_latents(inverted.latents, axes, {name: float(model.amount)}, locks, space="z")
    tuned_edits: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    tune_seconds = 0.0
    if tune:
        for i in tqdm(range(n), desc="tuning", disable=not progress):
            t0 = time.perf_counter()
            copy = tune_generator(
                generator,
                sources[i],
                inverted.latents[i],
                steps=DEFAULT_TUNE_STEPS if tune_steps is None else tune_steps,
                seed=seed,
            ).generator
            tune_seconds += (time.perf_counter() - t0) / n
            with torch.no_grad():
                for name in models:
                    tuned_edits[name].append(copy.synthesize(moved[name][i : i + 1], "z"))
            del copy
    header = {
        "inversion_psnr_db": float(inverted.psnr_db.mean()),
        "invert_seconds_per_image": invert_seconds,
        "tune_seconds_per_image": tune_seconds if tune else None,
    }
    return moved, tuned_edits, header


def world_latents(n: int, seed: int) -> torch.Tensor:
    """(n, 512) world latents of the evaluation: samples FIRST_INDEX.. of ``seed`` (never drawn in training)."""
    return latent_rng_normal(seed, np.arange(FIRST_INDEX, FIRST_INDEX + n), world.Z_DIM)


def masked_psnr_db(images: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR in dB over the pixels inside ``mask`` (N, 1, R, R); NaN where the mask is empty."""
    inside = mask.float().expand_as(targets)
    mse = ((images.float().clamp(-1, 1) - targets.float()).pow(2) * inside).flatten(1).sum(1)
    count = inside.flatten(1).sum(1)
    mse = mse / count.clamp_min(1)
    psnr = 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))
    return torch.where(count > 0, psnr, torch.full_like(psnr, float("nan")))


def _scores(
    images: torch.Tensor,
    targets: torch.Tensor,
    sources: torch.Tensor,
    mask: torch.Tensor,
    seconds: float,
    probability=None,
) -> dict[str, float | None]:
    """PSNR against the true edit (whole image and inside the edited part), the change outside it,
    seconds per image, and the classifier's mean probability of the attribute (None for yaw)."""
    inside = masked_psnr_db(images, targets, mask)
    return {
        "psnr_db": float(psnr_db(images, targets).mean()),
        "edited_part_psnr_db": float(inside[~inside.isnan()].mean()) if (~inside.isnan()).any() else None,
        "outside_change": float(outside_change(images, sources, mask).mean()),
        "attribute_probability": None if probability is None else float(probability(images).mean()),
        "seconds_per_image": float(seconds),
    }


def _continuity(
    model: TranslationModel,
    sources: torch.Tensor,
    classifier: Classifier,
    name: str,
    amount: float,
    steps: int,
    blend: str = "outputs",
) -> dict[str, Any]:
    """:func:`continuity_along` the translation's images at amounts 0, A / (steps - 1), ..., A."""
    amounts = [amount * k / (steps - 1) for k in range(steps)]
    images = [translate(sources, model, a, blend=blend) for a in amounts]
    return {"amounts": amounts, **continuity_along(images, classifier, name)}


def true_continuity(
    z: torch.Tensor, renderer: Generator, classifier: Classifier, name: str, amount: float, steps: int
) -> dict[str, Any]:
    """:func:`continuity_along` the world's own edit, ``render(z + a * true_axis)`` at a = 0 .. A:
    how smooth the classifier finds the truth (the ceiling of a translation's figures)."""
    amounts = [amount * k / (steps - 1) for k in range(steps)]
    axis = true_axis(name)
    images = [_batched(lambda b, a=a: renderer.synthesize(b + a * axis, "z"), z) for a in amounts]
    return {"amounts": amounts, **continuity_along(images, classifier, name)}


#: Falls of the probability smaller than this count as rising (float noise of the classifier).
RISE_TOLERANCE = 1e-4
#: The looser reading reported beside the strict one: a path counts as rising within
#: tolerance when its probability never falls by more than this (a 0.99 -> 0.98 wobble of a
#: saturated classifier passes, a lost attribute does not).
PROBABILITY_TOLERANCE = 0.01
#: A face "already has" the attribute when its probability at amount 0 is at least this.
HAS_ATTRIBUTE = 0.5


def _summary(values: torch.Tensor) -> dict[str, float] | None:
    """Median, mean and max of a 1-d tensor (None when empty)."""
    if values.numel() == 0:
        return None
    v = values.double()
    return {"median": float(v.median()), "mean": float(v.mean()), "max": float(v.max())}


def dip_report(probs: torch.Tensor, logits: torch.Tensor) -> dict[str, Any]:
    """Where and how far the classifier's score falls along paths that are not monotonic.

    ``probs`` and ``logits`` (N, K): the attribute's probability and logit of N faces at K
    amounts, the first the unedited. A face dips when its probability falls by more than
    :data:`RISE_TOLERANCE` between two neighbouring amounts. Returns, over the dipping faces:
    ``faces`` (their count), ``probability_fall`` and ``logit_fall`` (summaries of each face's
    largest single fall, as positive numbers), ``start_probability`` (summary of P at amount 0),
    ``share_starting_with_attribute`` (P at 0 >= :data:`HAS_ATTRIBUTE`), ``share_ending_below_start``
    and ``share_within_tolerance`` (largest fall <= :data:`PROBABILITY_TOLERANCE`: saturation
    wobble rather than a loss of the attribute); and ``per_face``, one
    ``[index, P at 0, largest P fall, largest logit fall, P at the end - P at 0]`` row each.
    """
    p_fall = (probs[:, :-1] - probs[:, 1:]).max(1).values
    l_fall = (logits[:, :-1] - logits[:, 1:]).max(1).values
    dipping = p_fall > RISE_TOLERANCE
    index = dipping.nonzero().flatten()
    start, net = probs[index, 0], probs[index, -1] - probs[index, 0]
    faces = len(index)
    return {
        "faces": faces,
        "probability_fall": _summary(p_fall[index]),
        "logit_fall": _summary(l_fall[index]),
        "start_probability": _summary(start),
        "share_starting_with_attribute": float((start >= HAS_ATTRIBUTE).float().mean()) if faces else None,
        "share_ending_below_start": float((net < -RISE_TOLERANCE).float().mean()) if faces else None,
        "share_within_tolerance": float((p_fall[index] <= PROBABILITY_TOLERANCE).float().mean())
        if faces
        else None,
        "per_face": [
            [
                int(i),
                round(float(probs[i, 0]), 5),
                round(float(p_fall[i]), 5),
                round(float(l_fall[i]), 4),
                round(float(probs[i, -1] - probs[i, 0]), 5),
            ]
            for i in index.tolist()
        ],
    }


def continuity_along(images: list[torch.Tensor], classifier: Classifier, name: str) -> dict[str, Any]:
    """How one edit moves along a path of images (each (N, 3, R, R), the first the unedited).

    ``mean_edit_share``: per step, the share of the full change drawn (sum over images of
    <x_k - x_0, x_K - x_0> / sum of ||x_K - x_0||^2). With the classifier's probability of
    ``name`` (all None for an attribute it lacks, such as yaw): ``monotonic_fraction``, the
    images whose probability never falls by more than :data:`RISE_TOLERANCE` along the path (the
    issue's target: 1, the headline); ``end_rises_fraction``, those whose probability at the end
    is not below the start (no path between the two ends can be monotonic for the others);
    ``monotonic_fraction_of_end_rising``, the monotonic share among those; ``monotonic_within_0.01``,
    the share whose probability never falls by more than :data:`PROBABILITY_TOLERANCE` (a looser
    reading, reported beside the strict one); ``mean_probability`` and ``mean_logit`` per step;
    and ``dips``, :func:`dip_report` of the faces that are not monotonic.
    """
    first = images[0].double()
    full = images[-1].double() - first
    norm = float(full.pow(2).sum())
    shares = [float(((x.double() - first) * full).sum()) / norm if norm > 0 else None for x in images]
    out: dict[str, Any] = {"mean_edit_share": shares}
    keys = (
        "monotonic_fraction",
        "end_rises_fraction",
        "monotonic_fraction_of_end_rising",
        "monotonic_within_0.01",
        "mean_probability",
        "mean_logit",
        "dips",
    )
    if name not in classifier.attributes:
        return {**out, **dict.fromkeys(keys)}
    index = classifier.attributes.index(name)
    logits = torch.stack(
        [_batched(lambda b: classifier.logits(b)[:, index], x) for x in images], 1
    ).double()  # (N, steps)
    probs = torch.sigmoid(logits)
    worst = (probs[:, 1:] - probs[:, :-1]).min(1).values
    rising = worst >= -RISE_TOLERANCE
    end_rises = probs[:, -1] - probs[:, 0] >= -RISE_TOLERANCE
    return {
        **out,
        "monotonic_fraction": float(rising.float().mean()),
        "end_rises_fraction": float(end_rises.float().mean()),
        "monotonic_fraction_of_end_rising": float(rising[end_rises].float().mean())
        if end_rises.any()
        else None,
        "monotonic_within_0.01": float((worst >= -PROBABILITY_TOLERANCE).float().mean()),
        "mean_probability": probs.mean(0).tolist(),
        "mean_logit": logits.mean(0).tolist(),
        "dips": dip_report(probs, logits),
    }
