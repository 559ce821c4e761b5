"""Training a translation model on a generator's own edit pairs (InterFaceGAN's second route).

A fitted axis makes unlimited paired data: a latent ``l`` and the same latent moved along the
attribute's axis, ``l' = l + amount * u`` (with ``u`` made orthogonal to the locked axes), give
the pair ``(G(l), G(l'))``. Training runs in two phases on pairs drawn afresh every step:

1. ``identity_steps``: a :class:`~tlgan.translate.network.TranslationNet` learns to return its
   input (``G(l) -> G(l)``), under an L1 pixel loss;
2. ``edit_steps``: a copy of it is fine-tuned to the translation (``G(l) -> G(l')``), under
   an L1 pixel loss weighted toward the pixels the pair changes (:func:`edit_loss_weights`),
   plus, with a classifier, the feature loss of inversion
   (:func:`tlgan.inversion.losses.feature_distance`), a term pulling the classifier's
   probability of the attribute to the edited image's (:func:`attribute_loss`) and a hinge
   keeping its logit rising along the mixed outputs (:func:`monotone_loss`).

Why the weighting: a thin edit (a glasses frame, grey strands) covers few pixels, and where
its exact place is uncertain, the per-pixel L1 optimum is to draw nothing at all. Weighting each
pixel by how much the pair changes it moves that optimum toward drawing the change.

Why the blur (:func:`blur_pairs`): the pairs are the generator's images, with the generator's
own fine texture (a small GAN's checkerboard and noise), while the network is applied to photos
or renders without it. A network trained on raw pairs draws the edit in that texture, and the
edit does not carry over: on toyfaces it turned the GAN's faces' P(Eyeglasses) from 0.11 to
0.98 but a clean render's only from 0.17 to 0.19. Blurring both images of each pair by a random
amount removes the texture the network could key on.

The step's latents come from its own random stream (seed, step), so a run resumed from its
checkpoint (``OUT/checkpoint/``, written every ``checkpoint_every`` steps) ends with the same
weights, bit for bit, as one that was never interrupted. ``identity_from`` reuses the identity
network of an earlier model (of the same generator): phase 1 is then skipped, which is how
several attributes share one identity network; ``edited_from`` starts from both networks of an
earlier model of the attribute and fine-tunes its edited one further (phase 1 skipped).

Why the hinge: the pairs, and a network fitted to them, can lower the classifier's score on
faces that already have the attribute (glasses drawn over glasses, a smile moved on a face that
already smiles); then the score cannot rise along any mix of the two networks' images. The
hinge asks each face's logit to rise by a margin over the edit, in proportion along the mix,
and is zero on faces where it does. The hinge needs no pairs, only images to translate, so
it can also hold on unlabelled photos of the kind the model will be used on
(``monotone_images``): a network fitted on the generator's images can still dip on photos, whose
texture and shading differ (on toyfaces, the renders dip where the same latents' GAN images do
not).

After training, the weight blend is calibrated (:mod:`tlgan.translate.schedule`) on
``calibration_images`` of the generator's own images (:func:`calibration_set`), so that an
amount of a quarter of the trained one draws a quarter of the edit; 0 leaves it uncalibrated.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.editing.edit import check_axes_for, edit_latents
from tlgan.errors import TlganError
from tlgan.inversion.losses import feature_distance
from tlgan.models.base import Classifier, Generator
from tlgan.train.checkpoint import has_checkpoint, restore_checkpoint, save_checkpoint
from tlgan.train.common import cosine_lr, resolve_device, set_lr, settings_mismatch, step_generator
from tlgan.translate.model import TranslationModel, load_translation
from tlgan.translate.network import TranslationNet
from tlgan.translate.schedule import calibrate_translation

log = logging.getLogger(__name__)

STREAM_PAIRS = 21
STREAM_BLUR = 22
STREAM_BLEND = 23
STREAM_CALIBRATION = 24
STREAM_MONOTONE = 25
STREAM_MONOTONE_IMAGES = 26
#: Calibration images are generator samples from here on of the training seed (the training
#: pairs come from per-step random streams, not from these indices).
CALIBRATION_START = 2_000_000
#: The margin of :func:`monotone_loss`, in logits per whole edit.
MONOTONE_MARGIN = 0.5
#: Settings recorded since the change-weighted loss, with the value older checkpoints used.
INTRODUCED = {
    "change_weight": 0.0,
    "attribute_weight": 0.0,
    "blur": 0.0,
    "blend_fraction": 0.0,
    "monotone_weight": 0.0,
    "monotone_margin": MONOTONE_MARGIN,
    "monotone_points": 1,
    "monotone_images": None,
    "edited_from": None,
}


def blend_amount(blend_fraction: float, generator: torch.Generator) -> float:
    """The blend ``a`` an edit step trains at: 1 (the edited network), or with probability
    ``blend_fraction`` a uniform draw from (0, 1) (the blend :func:`tlgan.translate.translate` uses)."""
    if blend_fraction <= 0:
        return 1.0
    draw, a = torch.rand(2, generator=generator).tolist()
    return a if draw < blend_fraction else 1.0


def blended_forward(identity: torch.nn.Module, edited: torch.nn.Module, a: float, images: torch.Tensor):
    """``images`` through the weights ``(1 - a) * identity + a * edited``, differentiable in the edited ones.

    (The blend of :func:`tlgan.translate.network.blend` goes through ``state_dict``, which carries
    no gradient; here the identity's weights are held fixed and the edited ones learn.)
    """
    params = {
        name: torch.lerp(p_identity.detach(), p_edited, a)
        for (name, p_identity), (_, p_edited) in zip(
            identity.named_parameters(), edited.named_parameters(), strict=True
        )
    }
    return torch.func.functional_call(edited, params, (images,))


def blur_pairs(
    source: torch.Tensor, target: torch.Tensor, max_sigma: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both images of each pair blurred alike, by a Gaussian of sigma ~ U(0, ``max_sigma``) px per pair.

    (N, 3, R, R) each. The same blur on both keeps the pair's edit; varying it across pairs
    keeps the network from keying on the generator's own fine texture (checkerboard, noise),
    which a photo or another renderer does not have. ``max_sigma`` 0 returns the inputs.
    """
    if max_sigma <= 0:
        return source, target
    n = source.shape[0]
    sigma = torch.rand(n, generator=generator).to(source.device) * max_sigma
    radius = max(1, math.ceil(3 * max_sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=source.dtype, device=source.device)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None].clamp_min(1e-3)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(3, 0)  # (N * 3, K)

    def blur(images: torch.Tensor) -> torch.Tensor:
        x = images.reshape(1, n * 3, *images.shape[-2:])
        x = F.conv2d(
            F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * 3
        )
        x = F.conv2d(
            F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel[:, None, :, None], groups=n * 3
        )
        return x.reshape(images.shape)

    return blur(source), blur(target)


def edit_loss_weights(source: torch.Tensor, target: torch.Tensor, change_weight: float) -> torch.Tensor:
    """(N, 1, R, R) pixel weights ``1 + change_weight * d / mean(d)``, ``d`` = |target - source| (max over channels).

    ``d`` is normalised by its mean over the batch, so the weights do not depend on how large the
    edit is overall; ``change_weight`` 0 gives uniform weights (a plain L1).
    """
    if change_weight <= 0:
        return source.new_ones((source.shape[0], 1, *source.shape[-2:]))
    d = (target - source).abs().amax(1, keepdim=True)
    return 1.0 + change_weight * d / d.mean().clamp_min(1e-6)


def weighted_l1(images: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The L1 distance averaged with ``weights`` (N, 1, R, R): a plain L1 when the weights are uniform."""
    return ((images - target).abs() * weights).sum() / (weights.sum() * images.shape[1])


def attribute_loss(
    classifier: Classifier, images: torch.Tensor, target: torch.Tensor, index: int
) -> torch.Tensor:
    """Binary cross-entropy of the classifier's probability of attribute ``index`` on ``images``
    against its probability on ``target`` (a soft label), minus its floor: 0 when they agree.
    Bounded gradients, unlike a squared logit distance."""
    with torch.no_grad():
        want = classifier.probabilities(target)[:, index]
    logit = classifier.logits(images)[:, index]
    floor = F.binary_cross_entropy(want, want, reduction="none")
    return (F.binary_cross_entropy_with_logits(logit, want, reduction="none") - floor).mean()


def monotone_loss(
    classifier: Classifier,
    start: torch.Tensor,
    end: torch.Tensor,
    index: int,
    margin: float,
    t: torch.Tensor,
) -> torch.Tensor:
    """A hinge that makes the classifier's logit of attribute ``index`` rise along the output mix.

    ``start`` (N, 3, R, R) is the identity network's image ``I(x)`` (held fixed), ``end`` the
    edited network's ``E(x)`` (trained), ``t`` (N,) or (N, K) points in (0, 1) per image,
    increasing along each row. With ``M_t = (1 - t) I + t E`` (the image
    :func:`tlgan.translate.translate` draws at ``t`` of the amount), ``l`` the logit and the
    chain ``t_0 = 0 < t_1 < ... < t_K < t_{K+1} = 1`` (``M_0 = I``, ``M_1 = E``), the loss is the
    mean over images of

        sum_k relu(l(M_{t_k}) - l(M_{t_{k+1}}) + margin * (t_{k+1} - t_k)),

    0 once the logit rises from each point to the next by at least its share of ``margin``
    (``margin`` over the whole edit). With one point this is
    ``relu(l(I) - l(M) + margin t) + relu(l(M) - l(E) + margin (1 - t))``: the end hinge lifts
    faces that already have the attribute (where a plain edit can end below its start), the
    middle one the mix between. More points also hold each mix above the one before it, which
    is what a path read at several amounts needs.
    """
    t = t.to(start)
    if t.dim() == 1:
        t = t[:, None]
    with torch.no_grad():
        first = classifier.logits(start)[:, index]
    mixes = [torch.lerp(start, end, t[:, k, None, None, None]) for k in range(t.shape[1])]
    logits = classifier.logits(torch.cat([*mixes, end]))[:, index].reshape(t.shape[1] + 1, -1).T
    chain = torch.cat([first[:, None], logits], 1)  # (N, K + 2): I, the K mixes, E
    ends = torch.cat([torch.zeros_like(t[:, :1]), t, torch.ones_like(t[:, :1])], 1)
    rises = F.relu(chain[:, :-1] - chain[:, 1:] + margin * (ends[:, 1:] - ends[:, :-1]))
    return rises.sum(1).mean()


def mix_points(n: int, points: int, generator: torch.Generator) -> torch.Tensor:
    """(n, points) mix points for :func:`monotone_loss`: one uniform draw in each of ``points``
    equal parts of (0, 1), so each row rises and covers the whole edit. One point is a plain
    uniform draw (the draws of models trained before the setting existed)."""
    u = torch.rand(n, points, generator=generator)
    return (torch.arange(points, dtype=u.dtype) + u) / points


def _check_monotone_images(images: torch.Tensor | None, resolution: int) -> dict[str, Any] | None:
    """The record of ``monotone_images`` ({count, digest}), or None; refuses a wrong shape or range."""
    if images is None:
        return None
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (resolution, resolution):
        raise TlganError(
            f"monotone images must be (M, 3, {resolution}, {resolution}), the generator's resolution; got "
            f"{tuple(images.shape)}: resize the photos to {resolution} px first"
        )
    if len(images) == 0 or (
        images.dtype != torch.uint8 and (not torch.isfinite(images).all() or images.abs().max() > 1)
    ):
        raise TlganError(
            "monotone images must be at least one image, as uint8 or as floats in [-1, 1] (finite)"
        )
    data = images.detach().cpu().contiguous().numpy().tobytes()
    return {"count": len(images), "digest": hashlib.sha256(data).hexdigest()[:16]}


def _as_float_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) as floats in [-1, 1], the mapping :func:`tlgan.imaging.read_image` uses;
    floats as they are."""
    return images.float() / 127.5 - 1.0 if images.dtype == torch.uint8 else images


def edit_pairs(
    generator: Generator,
    axes: FeatureAxes,
    attribute: str,
    amount: float,
    latents: torch.Tensor,
    locks: Sequence[str] = (),
) -> tuple[torch.Tensor, torch.Tensor]:
    """(G(latents), G(latents moved by ``amount`` along ``attribute``)), each (N, 3, R, R) in [-1, 1].

    ``latents`` are in the axes' space; ``locks`` are held fixed as in :func:`edit_latents`.
    """
    moved = edit_latents(latents, axes, {attribute: amount}, locks, space=axes.space)
    both = generator.synthesize(torch.cat([latents, moved]), axes.space)
    return both[: len(latents)], both[len(latents) :]


def calibration_set(generator: Generator, n: int = 64, seed: int = 0, blur: float = 1.5) -> torch.Tensor:
    """(n, 3, R, R) in [-1, 1]: the generator's samples CALIBRATION_START.. of ``seed``, blurred as in training.

    The images a blend schedule is measured on (:func:`tlgan.translate.schedule.calibrate_translation`):
    like the training sources, with the same random blur of up to ``blur`` px (its own stream).
    """
    if n < 1:
        raise TlganError(f"calibration needs at least 1 image, not {n}")
    z = generator.sample_latents(n, seed=seed, start=CALIBRATION_START)
    with torch.no_grad():
        images = torch.cat([generator.synthesize(z[i : i + 64], "z").cpu() for i in range(0, n, 64)])
    images, _ = blur_pairs(images, images, blur, step_generator(seed, 0, STREAM_CALIBRATION))
    return images


def step_latents(generator: Generator, space: str, batch_size: int, seed: int, step: int) -> torch.Tensor:
    """The latents of training step ``step``: (batch_size, ...) in ``space``, from (seed, step) alone."""
    z = torch.randn(batch_size, generator.z_dim, generator=step_generator(seed, step, STREAM_PAIRS))
    return generator.map_latents(z.to(generator.device), "z", space) if space != "z" else z


def _check_request(axes: FeatureAxes, attribute: str, amount: float, locks: Sequence[str]) -> None:
    axes.index(attribute)  # an unknown name raises with close matches
    if not amount > 0:
        raise TlganError(
            f"--amount must be positive (the edit the pairs are made of), not {amount}; a negative "
            f"edit is the same model applied with a negative amount"
        )
    for name in locks:
        axes.index(name)
    if attribute in locks:
        raise TlganError(f"{attribute} cannot be both translated and locked; drop it from --lock")


def train_translation(
    generator: Generator,
    axes: FeatureAxes,
    attribute: str,
    out_dir: str | os.PathLike,
    *,
    amount: float = 2.0,
    locks: Sequence[str] = (),
    classifier: Classifier | None = None,
    identity_steps: int = 600,
    edit_steps: int = 600,
    batch_size: int = 16,
    lr: float = 2e-3,
    width: int = 32,
    depth: int = 3,
    feature_weight: float = 0.1,
    change_weight: float = 16.0,
    attribute_weight: float = 0.0,
    blur: float = 1.5,
    blend_fraction: float = 0.0,
    monotone_weight: float = 0.0,
    monotone_margin: float = MONOTONE_MARGIN,
    monotone_points: int = 1,
    monotone_images: torch.Tensor | None = None,
    seed: int = 0,
    identity_from: str | os.PathLike | None = None,
    edited_from: str | os.PathLike | None = None,
    resume: bool = False,
    checkpoint_every: int = 100,
    device: str = "cpu",
    progress: bool = True,
    record: dict[str, Any] | None = None,
    calibration_images: int = 64,
    calibration_points: int = 33,
) -> TranslationModel:
    """Train the identity and edited networks for ``attribute`` and save the model folder in ``out_dir``.

    ``axes`` must be in a space of ``generator`` (``z`` or ``w``); ``amount`` is the latent move
    of the training pairs. ``record`` (generator spec, axes file, ...) is written into
    ``translation.json``. Returns the trained :class:`TranslationModel` (also saved).

    The edit phase's loss is the L1 weighted by :func:`edit_loss_weights` (``change_weight``;
    0 is a plain L1), plus ``feature_weight`` x the classifier feature distance and
    ``attribute_weight`` x :func:`attribute_loss` (both need ``classifier``; the second also
    needs the attribute among its outputs, else it is off and recorded as 0). ``blur`` > 0
    blurs both images of every pair alike (:func:`blur_pairs`), in both phases.
    ``blend_fraction`` of the edit steps train the weight blend at a random ``a`` in (0, 1)
    against pairs moved by ``a * amount`` (:func:`blend_amount`), so that the blends
    :func:`~tlgan.translate.translate` uses between the two networks are trained too.
    ``monotone_weight`` x :func:`monotone_loss` (needs ``classifier`` with the attribute, else
    off and recorded as 0) keeps the classifier's score rising along the mixed outputs, with
    ``monotone_margin`` logits of rise asked over the whole edit, at ``monotone_points`` mixes
    per image (:func:`mix_points`; 1 holds each mix between the two ends, more also hold
    each mix above the one before it). ``monotone_images`` (M, 3, R, R), uint8 (0..255, a
    quarter of the memory) or floats in [-1, 1], unlabelled photos at the generator's
    resolution, adds a batch of them, drawn afresh each step, to the hinge's images (recorded by
    count and digest, so a resume must pass the same ones).
    ``identity_from`` starts from an earlier model's identity network (phase 1 skipped);
    ``edited_from`` from both networks of an earlier model of the same attribute (phase 1
    skipped, and the edit phase fine-tunes its edited network further: how a new loss term is
    added to a trained model in minutes).
    The trained model's weight blend is then calibrated on ``calibration_images`` generator
    images at ``calibration_points`` blends (0 images: not calibrated, the blend stays linear).
    """
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    _check_request(axes, attribute, amount, locks)
    generator.check_space(axes.space)
    check_axes_for(axes, generator)
    if min(identity_steps, edit_steps, batch_size) < 0 or batch_size < 1 or edit_steps < 1:
        raise TlganError("steps must be >= 0, edit steps >= 1 and the batch size >= 1")
    weights = (change_weight, attribute_weight, feature_weight, blur, monotone_weight, monotone_margin)
    if min(weights) < 0 or not 0 <= blend_fraction <= 1:
        raise TlganError(
            f"--change-weight, --attribute-weight, --feature-weight, --blur, --monotone-weight and "
            f"--monotone-margin must be >= 0 and --blend-fraction in [0, 1]; got {', '.join(map(str, weights))}, "
            f"{blend_fraction}"
        )
    if isinstance(monotone_points, bool) or not isinstance(monotone_points, int) or monotone_points < 1:
        raise TlganError(f"--monotone-points must be a whole number >= 1, not {monotone_points!r}")
    images_record = _check_monotone_images(monotone_images, generator.img_resolution)
    if identity_from is not None and edited_from is not None:
        raise TlganError(
            "pass --identity-from or --edited-from, not both (--edited-from brings its identity)"
        )
    has_attribute = classifier is not None and attribute in classifier.attributes
    attribute_index = (
        classifier.attributes.index(attribute) if has_attribute and attribute_weight > 0 else None
    )
    monotone_index = classifier.attributes.index(attribute) if has_attribute and monotone_weight > 0 else None
    if monotone_weight > 0 and monotone_index is None:
        log.warning("--monotone-weight needs a classifier that scores %s; the term is off", attribute)
    if monotone_images is not None and monotone_index is None:
        log.warning("monotone photos serve only the hinge (--monotone-weight > 0); they are not used")
    torch.manual_seed(seed)
    identity = TranslationNet(generator.img_resolution, width, depth)
    base_record = None
    if identity_from is not None:
        base = load_translation(identity_from)
        if base.identity.config_kwargs != identity.config_kwargs:
            raise TlganError(
                f"{identity_from}: its networks are {base.identity.config_kwargs}, this training asks for "
                f"{identity.config_kwargs}; pass the same --width and --depth"
            )
        identity.load_state_dict(base.identity.state_dict())
        base_record = {"identity_from": str(identity_from), "generator": base.record.get("generator")}
        identity_steps = 0
    edited = TranslationNet(generator.img_resolution, width, depth)
    if edited_from is not None:
        base = load_translation(edited_from)
        if base.identity.config_kwargs != identity.config_kwargs or base.attribute != attribute:
            raise TlganError(
                f"{edited_from}: a model of {base.attribute} with networks {base.identity.config_kwargs}; "
                f"fine-tuning {attribute} with {identity.config_kwargs} needs the same attribute, --width "
                f"and --depth"
            )
        identity.load_state_dict(base.identity.state_dict())
        edited.load_state_dict(base.edited.state_dict())
        base_record = {
            "edited_from": str(edited_from),
            "identity_from": base.record.get("identity_from"),
            "generator": base.record.get("generator"),
        }
        identity_steps = 0
    identity.to(dev)
    edited.to(dev)
    opt_identity = torch.optim.Adam(identity.parameters(), lr=lr, betas=(0.5, 0.99))
    opt_edited = torch.optim.Adam(edited.parameters(), lr=lr, betas=(0.5, 0.99))
    settings = {
        "attribute": attribute,
        "amount": float(amount),
        "locks": list(locks),
        "space": axes.space,
        "identity_steps": int(identity_steps),
        "edit_steps": int(edit_steps),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "width": int(width),
        "depth": int(depth),
        "feature_weight": float(feature_weight) if classifier is not None else 0.0,
        "change_weight": float(change_weight),
        "blur": float(blur),
        "blend_fraction": float(blend_fraction),
        "attribute_weight": float(attribute_weight) if attribute_index is not None else 0.0,
        "monotone_weight": float(monotone_weight) if monotone_index is not None else 0.0,
        "monotone_margin": float(monotone_margin),
        "monotone_points": int(monotone_points),
        "monotone_images": images_record if monotone_index is not None else None,
        "seed": int(seed),
        "identity_from": None if identity_from is None else str(identity_from),
        "edited_from": None if edited_from is None else str(edited_from),
    }
    modules = {"identity": identity, "edited": edited}
    optimizers = {"identity": opt_identity, "edited": opt_edited}
    start = 0
    if resume:
        if not has_checkpoint(out_dir):
            raise TlganError(f"{out_dir}: no checkpoint to resume from; run without --resume")
        manifest = restore_checkpoint(out_dir, modules=modules, optimizers=optimizers)
        diff = settings_mismatch(manifest["info"].get("settings", {}), settings, INTRODUCED)
        if diff:
            raise TlganError(
                f"{out_dir}: the checkpoint was trained with other settings ({'; '.join(diff)}); pass the "
                f"same ones, or start in a new --out folder"
            )
        start = int(manifest["step"])
        log.info("resuming %s at step %d", out_dir, start)
    elif has_checkpoint(out_dir):
        raise TlganError(f"{out_dir} already holds a training checkpoint; add --resume or choose a new --out")
    generator.eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    if classifier is not None:
        classifier.eval()
        for p in classifier.parameters():
            p.requires_grad_(False)
    total = identity_steps + edit_steps
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = tqdm(
        range(start, total), initial=start, total=total, desc=f"translate {attribute}", disable=not progress
    )
    for step in bar:
        if step == identity_steps and edited_from is None:
            edited.load_state_dict(identity.state_dict())
        phase_identity = step < identity_steps
        net, opt = (identity, opt_identity) if phase_identity else (edited, opt_edited)
        local, steps = (step, identity_steps) if phase_identity else (step - identity_steps, edit_steps)
        set_lr(opt, cosine_lr(local, steps, lr, warmup=min(50, steps // 10)))
        a = 1.0 if phase_identity else blend_amount(blend_fraction, step_generator(seed, step, STREAM_BLEND))
        with torch.no_grad():
            latents = step_latents(generator, axes.space, batch_size, seed, step)
            source, target = edit_pairs(generator, axes, attribute, a * amount, latents.to(dev), locks)
            if phase_identity:
                target = source
            source, target = blur_pairs(source, target, blur, step_generator(seed, step, STREAM_BLUR))
        out = net(source) if a == 1.0 else blended_forward(identity, edited, a, source)
        if phase_identity:
            loss = F.l1_loss(out, target)
        else:
            loss = weighted_l1(out, target, edit_loss_weights(source, target, change_weight))
            if classifier is not None and feature_weight > 0:
                loss = loss + feature_weight * feature_distance(classifier, out, targets=target).mean()
            if attribute_index is not None:
                loss = loss + attribute_weight * attribute_loss(classifier, out, target, attribute_index)
            if monotone_index is not None:
                with torch.no_grad():
                    start_images = identity(source)
                end_images = out if a == 1.0 else edited(source)
                if monotone_images is not None:
                    pick = torch.randint(
                        len(monotone_images),
                        (batch_size,),
                        generator=step_generator(seed, step, STREAM_MONOTONE_IMAGES),
                    )
                    photos = _as_float_images(monotone_images[pick]).to(dev)
                    with torch.no_grad():
                        start_images = torch.cat([start_images, identity(photos)])
                    end_images = torch.cat([end_images, edited(photos)])
                t = mix_points(len(end_images), monotone_points, step_generator(seed, step, STREAM_MONOTONE))
                loss = loss + monotone_weight * monotone_loss(
                    classifier, start_images, end_images, monotone_index, monotone_margin, t
                )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # A bounded step: without normalisation layers, one large feature-loss gradient can
        # throw the fine-tuned copy far from the identity it starts at.
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if progress:
            bar.set_postfix(loss=f"{losses[-1]:.4f}", phase="identity" if phase_identity else "edit")
        done = step + 1
        if done % checkpoint_every == 0 or done == total:
            save_checkpoint(
                out_dir, step=done, modules=modules, optimizers=optimizers, info={"settings": settings}
            )
    record = {
        **(record or {}),
        **(base_record or {}),
        "locks": list(locks),
        "space": axes.space,
        "settings": settings,
        "final_loss": losses[-1] if losses else None,
        "loss_curve": [
            round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 5) for i in range(0, len(losses), 50)
        ],
        "train_seconds": round(time.perf_counter() - t0, 3),
    }
    model = TranslationModel(identity.cpu().eval(), edited.cpu().eval(), attribute, float(amount), record)
    if calibration_images > 0:
        images = calibration_set(generator, calibration_images, seed, blur)
        try:
            calibrate_translation(
                model, images, points=calibration_points, info={"seed": int(seed), "blur": float(blur)}
            )
        except TlganError as exc:  # an edit that draws nothing has no schedule; the model still works
            log.warning("%s: not calibrated (%s); the blend stays linear in the amount", out_dir, exc)
    model.save(out_dir)
    log.info("translation model for %s saved to %s", attribute, out_dir)
    return model
