"""Pivotal tuning (Roich et al. 2021, "Pivotal Tuning for Latent-based Editing of Real Images").

A latent search alone rarely reproduces a real photo: the photo lies off the generator's
image manifold. Pivotal tuning keeps the latent found (the *pivot*) and instead nudges a
copy of the generator's weights until the pivot reproduces the photo:

    L(theta) = reconstruction loss of G_theta(pivot) against the photo      (tlgan.inversion.losses)
             + locality_weight * mean |G_theta(l_r) - G(l_r)|^2 over latents l_r near the pivot

The locality term (PTI's regulariser) is what keeps edits working: each step draws
``locality_samples`` latents on random rays from the pivot, at distances up to
``locality_radius`` (in units of the space's per-coordinate spread: 1 in z), and asks the
tuned generator to draw them as the original does. An edit along an attribute axis moves
the latent a few units from the pivot, inside that neighbourhood, so it still does what it
did; faces far away are untouched by construction of the loss.

Only the generator's parameters change (BatchNorm running statistics and other buffers
stay), and exactly one copy of the weights is made per photo (plus Adam's two moment
buffers while it runs); nothing is copied per step.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tlgan.errors import TlganError
from tlgan.inversion.encoder import frozen, psnr_db
from tlgan.inversion.losses import reconstruction_loss
from tlgan.inversion.optimize import _check_targets, raw_images
from tlgan.models.base import Classifier, Generator

log = logging.getLogger(__name__)

TUNED_FORMAT = "tlgan.tuned/1"
DEFAULT_TUNE_STEPS = 100


@dataclass
class TuningResult:
    """What :func:`tune_generator` made for one photo.

    ``generator`` the tuned copy (eval mode, on the original's device); ``reconstruction``
    (3, R, R) in [-1, 1] of the pivot through it (CPU); ``psnr_db`` of that against the
    photo and ``start_psnr_db`` through the original; ``seconds``; ``info`` the settings,
    steps run, loss history and the final locality error.
    """

    generator: Generator
    reconstruction: torch.Tensor
    psnr_db: float
    start_psnr_db: float
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)


def _spread(generator: Generator, space: str, samples: int = 256, seed: int = 0) -> float:
    """The RMS per-coordinate spread of the space's latents around their mean (1 for z)."""
    if space == "z":
        return 1.0
    latents = generator.sample_latents(samples, seed=seed, space=space)
    return float((latents - latents.mean(0, keepdim=True)).pow(2).mean().sqrt())


def locality_latents(
    generator: Generator,
    pivot: torch.Tensor,
    space: str,
    n: int,
    radius: float,
    rng: torch.Generator,
    spread: float = 1.0,
) -> torch.Tensor:
    """``n`` latents (n, *latent_shape(space)) on rays from ``pivot`` (one latent) toward fresh samples.

    Each is ``pivot + r * u`` with u the unit vector toward a fresh latent of the space (drawn
    from ``rng``) and r uniform in [0, radius * spread): in z with spread 1, ``radius`` is in
    the units of an edit along a unit axis (``Smiling +2`` moves 2).
    """
    shape = generator.latent_shape(space)
    if space == "z":
        toward = torch.randn((n, *shape), generator=rng)
    else:
        z = torch.randn((n, generator.z_dim), generator=rng)
        with torch.no_grad():
            toward = generator.map_latents(z.to(generator.device), "z", space).float().cpu()
    direction = toward - pivot[None]
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-8).view(-1, *([1] * len(shape)))
    distance = radius * spread * torch.rand(n, generator=rng).view(-1, *([1] * len(shape)))
    return pivot[None] + distance * direction


def tune_generator(
    generator: Generator,
    target: torch.Tensor,
    pivot: torch.Tensor,
    *,
    space: str = "z",
    classifier: Classifier | None = None,
    steps: int = DEFAULT_TUNE_STEPS,
    lr: float = 1e-3,
    pixel_weight: float = 1.0,
    feature_weight: float = 0.05,
    gradient_weight: float = 0.5,
    locality_weight: float = 1.0,
    locality_radius: float = 3.0,
    locality_samples: int = 4,
    noise: dict[str, torch.Tensor] | None = None,
    patience: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
) -> TuningResult:
    """Fine-tune a copy of ``generator`` so that ``pivot`` reproduces ``target`` (3, R, R) in [-1, 1].

    ``pivot`` is one latent of ``space`` (``latent_shape(space)``), e.g. from
    :func:`tlgan.inversion.invert`. Adam at ``lr`` (PTI used 3e-4 on StyleGAN2 at 1024 px; small
    generators take 1e-3) on every parameter of the copy for at most ``steps`` steps; it stops
    early when the reconstruction loss has not improved by the relative ``tol`` for ``patience``
    steps. No best-weights snapshot is kept: that would be a second copy of the weights, and
    at these learning rates the loss falls steadily.

    The loss terms are those of the latent search (classifier features, or image gradients
    without a classifier) plus the locality term (see module docs; ``locality_weight`` 0 turns
    it off). tlgan's commands tune without a classifier (pixels + image gradients): the latent
    search has already settled the attributes, and on toyfaces-gan this reaches a higher PSNR
    in less time than with the feature term. ``noise`` {name: (R, R)} (StyleGAN2) are optimised
    noise maps to bake into the copy's noise buffers first (the locality reference uses them
    too). ``seed`` fixes the locality samples. The original is not modified.
    """
    if steps < 0:
        raise TlganError(f"steps must be >= 0, not {steps}")
    if locality_weight < 0 or locality_radius < 0 or locality_samples < 0:
        raise TlganError("locality_weight, locality_radius and locality_samples must be >= 0")
    t0 = time.perf_counter()
    device = generator.device
    target = _check_targets(generator, target)[:1].to(device)
    pivot = generator.check_latents(pivot, space)[:1].detach().float().to(device)
    # The one copy of the weights for this photo; the original stays the locality reference.
    tuned = copy.deepcopy(generator).to(device)
    tuned.eval()
    if noise:
        buffers = tuned.noise_maps()
        unknown = sorted(set(noise) - set(buffers))
        if unknown:
            raise TlganError(f"noise maps {unknown} are not in generator {generator.name!r}")
        with torch.no_grad():
            for name, value in noise.items():
                buffers[name].copy_(value.reshape(buffers[name].shape))
    reference_noise = (
        None
        if not noise
        else {
            name: value.detach().float().to(device).reshape(1, 1, *value.shape[-2:])
            for name, value in noise.items()
        }
    )
    params = [p for p in tuned.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr, foreach=True)  # one fused pass over all tensors: much faster on CPU
    rng = torch.Generator().manual_seed(int(seed))
    spread = _spread(generator, space) if locality_weight > 0 and locality_samples > 0 else 1.0
    history = []
    with frozen(generator, classifier):
        recon_loss = reconstruction_loss(
            target,
            classifier=classifier,
            pixel_weight=pixel_weight,
            feature_weight=feature_weight,
            gradient_weight=gradient_weight,
            pixel_loss="mse",
        )
        with torch.no_grad():
            start = raw_images(tuned, pivot, space).clamp(-1, 1)
            start_psnr = float(psnr_db(start, target)[0])
        best_loss, since, steps_run = float("inf"), 0, 0
        last_locality = 0.0
        bar = tqdm(
            total=steps,
            desc="tuning the generator",
            unit="step",
            disable=None if progress else True,
            leave=False,
        )
        for step in range(1, steps + 1):
            if locality_weight > 0 and locality_samples > 0:
                near = locality_latents(
                    generator, pivot[0].cpu(), space, locality_samples, locality_radius, rng, spread
                ).to(device)
                with torch.no_grad():
                    # The original with this photo's noise maps (if any): the copy starts equal to it.
                    reference = raw_images(generator, near, space, reference_noise)
                # One pass through the copy for the pivot and its neighbours together.
                images = raw_images(tuned, torch.cat([pivot, near]), space)
                loss_rec = recon_loss(images[:1])[0]
                loc = (images[1:] - reference).pow(2).mean()
                last_locality = float(loc.detach())
                loss = loss_rec + locality_weight * loc
            else:
                loss_rec = recon_loss(raw_images(tuned, pivot, space))[0]
                loss = loss_rec
            value = float(loss.detach())
            # The reconstruction alone decides progress: the locality samples change every step.
            score = float(loss_rec.detach())
            if score < best_loss * (1.0 - tol):
                best_loss, since = score, 0
            else:
                since += 1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps_run = step
            history.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if since >= patience:
                break
        bar.close()
        del opt
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    tuned.eval()
    with torch.no_grad():
        recon = raw_images(tuned, pivot, space).clamp(-1, 1)
        psnr = float(psnr_db(recon, target)[0])
    seconds = time.perf_counter() - t0
    info = {
        "steps": steps_run,
        "lr": lr,
        "locality_weight": locality_weight,
        "locality_radius": locality_radius,
        "locality_samples": locality_samples,
        "last_locality_mse": last_locality,
        "history": history,
        "loss_terms": recon_loss.terms,
        "seed": int(seed),
    }
    log.info(
        "tuned %r for one photo: PSNR %.2f -> %.2f dB in %d steps (%.1f s)",
        generator.name,
        start_psnr,
        psnr,
        steps_run,
        seconds,
    )
    return TuningResult(tuned, recon[0].float().cpu(), psnr, start_psnr, seconds, info)


# ----------------------------------------------------------------------------------------
# Saving and loading the tuned generator
# ----------------------------------------------------------------------------------------


def save_tuned(
    result: TuningResult,
    directory: str | Path,
    *,
    base_spec: str,
    space: str,
    source: str | None = None,
    storage: str = "full",
    base: Generator | None = None,
    pivot: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
) -> Path:
    """Write the tuned generator into ``directory``; ``tlgan`` loads it back as a generator spec.

    ``storage`` "full" for an architecture tlgan rebuilds from a config writes a self-contained
    model folder (model.json + model.safetensors); any other generator (a ``file.py:factory``
    module, TorchScript), and ``storage`` "float16-delta" (half the bytes), write tuned.json +
    tuned.safetensors: the base spec plus the tuned tensors (:mod:`tlgan.models.formats.tuned`;
    ``base`` is the original generator, loaded from ``base_spec`` if not given). With
    "float16-delta" ``result.generator`` is rounded in place to the stored weights, so it draws
    what the folder loads; given the ``pivot`` latent and the ``target`` photo (3, R, R) it was
    tuned for, ``result.reconstruction`` and ``result.psnr_db`` are redrawn through the rounded weights.

    Either way ``"tuned": {"format", "base", "space", "source", "psnr_db", ...}`` is recorded so
    that commands that need the original (default axes, the studio) can find it with
    :func:`tuned_base`. The generator keeps its original name, so axes fitted for the original
    are accepted for it.
    """
    from tlgan.models.formats.folder import ARCHITECTURES, architecture_class, save_pretrained
    from tlgan.models.formats.tuned import save_tuned_state

    arch = type(result.generator).__name__
    meta = {
        "format": TUNED_FORMAT,
        "base": str(base_spec),
        "space": space,
        "source": source,
        "psnr_db": round(result.psnr_db, 3),
        "start_psnr_db": round(result.start_psnr_db, 3),
        "steps": result.info.get("steps"),
        "locality_weight": result.info.get("locality_weight"),
        "locality_radius": result.info.get("locality_radius"),
        "seed": result.info.get("seed"),
    }
    if storage == "full" and arch in ARCHITECTURES and architecture_class(arch) is type(result.generator):
        return save_pretrained(result.generator, directory, extra={"tuned": meta})
    folder = save_tuned_state(
        result.generator, directory, base_spec=base_spec, base=base, storage=storage, meta=meta
    )
    if storage != "full" and pivot is not None and target is not None:
        with torch.no_grad():
            pivot = result.generator.check_latents(pivot, space)[:1].to(result.generator.device)
            recon = raw_images(result.generator, pivot, space).clamp(-1, 1).float().cpu()
        result.reconstruction = recon[0]
        result.psnr_db = float(psnr_db(recon, target[None].cpu())[0])
    return folder


def tuned_base(spec: str) -> str | None:
    """The spec of the generator that the tuned folder ``spec`` was tuned from, or None for any other spec."""
    from tlgan.io import read_json

    path = Path(str(spec))
    config = path / "model.json"
    if path.is_dir() and (path / "tuned.json").is_file():
        config = path / "tuned.json"
    if not (path.is_dir() and config.is_file()):
        return None
    try:
        meta = read_json(config)
    except TlganError:
        return None
    tuned = meta.get("tuned") if isinstance(meta, dict) else None
    if isinstance(tuned, dict) and tuned.get("format") == TUNED_FORMAT and isinstance(tuned.get("base"), str):
        return tuned["base"]
    return None
