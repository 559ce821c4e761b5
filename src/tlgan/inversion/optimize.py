"""Inverting images by optimising latents, and the one-call ``invert`` that uses it.

For target images x (N, 3, R, R) and a starting guess z0 (N, D) (from the encoder, or the
best of a few random latents), Adam minimises per image

    L(z) = pixel_weight   * mean |G(z) - x|^2          (or |.| with pixel_loss="l1")
         + feature_weight * feature distance of G(z) and x in the classifier's hidden layers
         + prior_weight   * (|z|^2 - D)^2 / D^2

The prior keeps z near the shell |z|^2 ~ D where standard-normal latents live, so the
latent stays one the generator has seen and attribute edits behave. Each image has its
own learning rate, halved when its loss has not improved for ``patience`` steps; an image
whose loss still does not improve after ``max_decays`` halvings stops (and drops out of
the batch), and the latent with the lowest loss seen is returned.
"""
from __future__ import annotations

import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tlgan.errors import TlganError
from tlgan.inversion.encoder import LatentEncoder, feature_distance, frozen, psnr_db
from tlgan.models.base import Classifier, Generator

log = logging.getLogger(__name__)

DEFAULT_STEPS = 100


def _prior(z: torch.Tensor) -> torch.Tensor:
    """(|z|^2 - D)^2 / D^2 per row (N,): 0 on the shell where N(0, I) latents concentrate."""
    d = z.shape[1]
    return (z.pow(2).sum(1) - d).pow(2) / (d * d)


def _pixel(images: torch.Tensor, targets: torch.Tensor, kind: str) -> torch.Tensor:
    diff = images - targets
    return (diff.abs() if kind == "l1" else diff.pow(2)).flatten(1).mean(1)


def optimize_latents(generator: Generator, targets: torch.Tensor, init: torch.Tensor, *,
                     classifier: Optional[Classifier] = None, steps: int = DEFAULT_STEPS, lr: float = 0.05,
                     pixel_weight: float = 1.0, feature_weight: float = 0.05, prior_weight: float = 0.01,
                     pixel_loss: str = "mse", patience: int = 8, max_decays: int = 2, tol: float = 1e-3,
                     space: str = "z", progress: bool = False) -> Tuple[torch.Tensor, Dict[str, Any]]:
    """Refine latents ``init`` (N, D) so that ``generator`` reproduces ``targets`` (N, 3, R, R) in [-1, 1].

    Runs at most ``steps`` Adam steps (learning rate ``lr`` per image, halved on a plateau
    of ``patience`` steps; a step improves the loss if it lowers the best by more than the
    relative ``tol``). ``feature_weight`` needs a ``classifier`` with ``features(images)``
    (ignored without one). Returns (best latents (N, D) on CPU, info) where info holds
    ``loss`` (N,) the best losses, ``init_loss`` (N,), ``steps`` run, ``image_steps`` (the
    summed number of steps over images, a measure of work), ``stopped_early`` and
    ``history`` (mean loss of the active images per step).
    """
    if pixel_loss not in ("mse", "l1"):
        raise TlganError(f"pixel_loss must be 'mse' or 'l1', not {pixel_loss!r}")
    if steps < 0:
        raise TlganError(f"steps must be >= 0, not {steps}")
    device = next(iter(generator.parameters()), torch.empty(0)).device
    targets = _check_targets(generator, targets).to(device)
    z = generator.check_latents(init, space).detach().to(device=device, dtype=torch.float32).clone()
    if len(z) != len(targets):
        raise TlganError(f"{len(targets)} target images but {len(z)} initial latents")
    if classifier is None or feature_weight <= 0:
        classifier, feature_weight = None, 0.0
    n = len(z)
    t0 = time.perf_counter()
    with frozen(generator, classifier):
        target_feats = None
        if classifier is not None:
            with torch.no_grad():
                target_feats = [f.detach() for f in classifier.features(targets)]

        def losses(latents: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            images = generator.synthesize(latents, space)
            loss = pixel_weight * _pixel(images, targets[rows], pixel_loss)
            if classifier is not None:
                loss = loss + feature_weight * feature_distance(classifier, images, target_features=[
                    f[rows] for f in target_feats])
            if prior_weight > 0:
                loss = loss + prior_weight * _prior(latents)
            return loss

        best = z.clone()
        with torch.no_grad():
            best_loss = losses(z, torch.arange(n, device=device))
        init_loss = best_loss.clone()
        # Adam state per row, so that each image has its own learning rate and can leave early.
        m = torch.zeros_like(z)
        v = torch.zeros_like(z)
        t = torch.zeros(n, device=device)
        rate = torch.full((n,), float(lr), device=device)
        since = torch.zeros(n, dtype=torch.long, device=device)   # steps since the last improvement
        decays = torch.zeros(n, dtype=torch.long, device=device)
        active = torch.arange(n, device=device)
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        history, image_steps, steps_run = [], 0, 0
        bar = tqdm(total=steps, desc=f"inverting {n} image{'s' if n != 1 else ''}", unit="step",
                   disable=None if progress else True, leave=False)
        for step in range(1, steps + 1):
            if len(active) == 0:
                break
            za = z[active].requires_grad_(True)
            loss = losses(za, active)
            grad, = torch.autograd.grad(loss.sum(), za)
            with torch.no_grad():
                loss = loss.detach()
                # Keep the latent that gave each image its lowest loss (measured before this update).
                improved = loss < best_loss[active] * (1.0 - tol)
                better = loss < best_loss[active]
                rows = active[better]
                best[rows] = za.detach()[better]
                best_loss[rows] = loss[better]
                since[active] = torch.where(improved, torch.zeros_like(since[active]), since[active] + 1)
                # Adam update of the active rows.
                t[active] += 1
                m[active] = beta1 * m[active] + (1 - beta1) * grad
                v[active] = beta2 * v[active] + (1 - beta2) * grad.pow(2)
                ta = t[active][:, None]
                m_hat = m[active] / (1 - beta1 ** ta)
                v_hat = v[active] / (1 - beta2 ** ta)
                z[active] = za.detach() - rate[active][:, None] * m_hat / (v_hat.sqrt() + eps)
                # Plateau: halve the learning rate, restart from the best latent; give up after max_decays.
                stalled = active[since[active] >= patience]
                if len(stalled):
                    decays[stalled] += 1
                    rate[stalled] *= 0.5
                    since[stalled] = 0
                    z[stalled] = best[stalled]
                    m[stalled] = 0.0
                    v[stalled] = 0.0
                    t[stalled] = 0
                    active = active[decays[active] <= max_decays]
            image_steps += len(za)
            steps_run = step
            history.append(float(loss.mean()))
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.4f}", active=len(active))
        bar.close()
    info = {
        "loss": best_loss.cpu(),
        "init_loss": init_loss.cpu(),
        "steps": steps_run,
        "image_steps": image_steps,
        "stopped_early": bool(len(active) == 0 and steps_run < steps),
        "history": history,
        "seconds": time.perf_counter() - t0,
    }
    return best.cpu(), info


def _check_targets(generator: Generator, images: torch.Tensor) -> torch.Tensor:
    """Targets as float (N, 3, R, R) at the generator's resolution, values in [-1, 1]."""
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise TlganError(f"images must be (N, 3, H, W) in [-1, 1]; got shape {tuple(images.shape)}")
    images = images.float()
    if not torch.isfinite(images).all():
        raise TlganError("images contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.01 or hi > 1.01:
        raise TlganError(f"image values span [{lo:.3g}, {hi:.3g}] but must lie in [-1, 1]; "
                         f"for 0..255 pixels use x / 127.5 - 1 (tlgan.imaging.load_image does this)")
    res = generator.img_resolution
    if images.shape[-2:] != (res, res):
        images = F.interpolate(images, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
    return images.clamp(-1, 1)


@torch.no_grad()
def random_search_init(generator: Generator, targets: torch.Tensor, *, candidates: int = 64, seed: int = 0,
                       space: str = "z", batch_size: int = 64) -> torch.Tensor:
    """For each target, the one of ``candidates`` latents (samples 0.. of ``seed``) whose image is closest (MSE).

    The start used when there is no encoder. Returns (N, D) on CPU.
    """
    device = next(iter(generator.parameters()), torch.empty(0)).device
    targets = _check_targets(generator, targets).to(device)
    pool = generator.sample_latents(candidates, seed=seed, space=space)
    dists = []
    with frozen(generator):
        for start in range(0, candidates, batch_size):
            images = generator.synthesize(pool[start:start + batch_size].to(device), space)
            dists.append(torch.cdist(targets.flatten(1), images.flatten(1)).cpu())
    return pool[torch.cat(dists, 1).argmin(1)]


@dataclass
class InversionResult:
    """What :func:`invert` found for N images.

    ``latents`` (N, D) and ``reconstructions`` (N, 3, R, R) in [-1, 1] (both CPU);
    ``psnr_db`` (N,) of the reconstructions against the targets; ``encoder_psnr_db`` (N,)
    of the encoder's guess alone (None without an encoder); ``seconds_per_image`` the wall
    time of the whole inversion divided by N; ``info`` the optimiser's details.
    """

    latents: torch.Tensor
    reconstructions: torch.Tensor
    psnr_db: torch.Tensor
    seconds_per_image: float
    encoder_psnr_db: Optional[torch.Tensor] = None
    space: str = "z"
    info: Dict[str, Any] = field(default_factory=dict)


def invert(generator: Generator, images: torch.Tensor, *, encoder: Optional[LatentEncoder] = None,
           classifier: Optional[Classifier] = None, optimize: bool = True, steps: int = DEFAULT_STEPS,
           lr: float = 0.05, pixel_weight: float = 1.0, feature_weight: float = 0.05, prior_weight: float = 0.01,
           patience: int = 8, batch_size: int = 32, candidates: int = 64, seed: int = 0,
           progress: bool = False) -> InversionResult:
    """Latents whose generated images reproduce ``images`` (N, 3, R, R) in [-1, 1] (resized to the generator's size).

    The start is ``encoder(images)`` when an encoder is given, else the best of
    ``candidates`` random latents (samples of ``seed``); with ``optimize`` it is refined by
    :func:`optimize_latents` (``classifier`` adds the feature loss), in batches of
    ``batch_size`` images.
    """
    t0 = time.perf_counter()
    device = next(iter(generator.parameters()), torch.empty(0)).device
    targets = _check_targets(generator, images)
    if encoder is not None and encoder.z_dim != generator.z_dim:
        raise TlganError(f"the encoder makes latents of size {encoder.z_dim}, generator {generator.name!r} takes "
                         f"{generator.z_dim}; use the generator's own encoder")
    latents, recons, psnrs, enc_psnrs = [], [], [], []
    info: Dict[str, Any] = {"steps": 0, "image_steps": 0, "optimized": bool(optimize and steps > 0)}
    for start in range(0, len(targets), batch_size):
        chunk = targets[start:start + batch_size].to(device)
        if encoder is not None:
            with torch.no_grad(), frozen(encoder, generator):
                init = encoder.to(device)(chunk).float()
                enc_psnrs.append(psnr_db(generator.synthesize(init), chunk).cpu())
        else:
            init = random_search_init(generator, chunk, candidates=candidates, seed=seed)
        if optimize and steps > 0:
            z, opt_info = optimize_latents(generator, chunk, init, classifier=classifier, steps=steps, lr=lr,
                                           pixel_weight=pixel_weight, feature_weight=feature_weight,
                                           prior_weight=prior_weight, patience=patience, progress=progress)
            info["steps"] = max(info["steps"], opt_info["steps"])
            info["image_steps"] += opt_info["image_steps"]
        else:
            z = init.cpu()
        with torch.no_grad(), frozen(generator):
            recon = generator.synthesize(z.to(device)).float().cpu()
        latents.append(z.cpu())
        recons.append(recon)
        psnrs.append(psnr_db(recon, chunk.cpu()))
    seconds = time.perf_counter() - t0
    return InversionResult(
        latents=torch.cat(latents), reconstructions=torch.cat(recons), psnr_db=torch.cat(psnrs),
        seconds_per_image=seconds / max(1, len(targets)),
        encoder_psnr_db=torch.cat(enc_psnrs) if enc_psnrs else None, info=info)


# The studio inverts one upload at a time; remember each generator's encoder (or its absence).
_ENCODERS: "weakref.WeakKeyDictionary[Generator, Optional[LatentEncoder]]" = weakref.WeakKeyDictionary()


def encoder_for(generator: Generator) -> Optional[LatentEncoder]:
    """The encoder shipped with ``generator``, or None; looked up once per generator object.

    First by the generator's registered name; failing that, any bundled encoder whose
    stored weights fingerprint matches this generator (its name may differ from the
    registered one, e.g. when it was loaded from its folder).
    """
    if generator not in _ENCODERS:
        from tlgan.inversion.encoder import bundled_encoder_dirs, generator_fingerprint, load_encoder, load_encoder_dir

        device = next(iter(generator.parameters()), torch.empty(0)).device
        encoder = None
        try:
            # By registered name only: a folder in the working directory that happens to share
            # the generator's name must not be picked up.
            encoder = load_encoder(generator.name, generator=generator, device=device, allow_path=False)
            if encoder is None:
                fingerprint = generator_fingerprint(generator)
                for directory, stored in bundled_encoder_dirs():
                    if stored == fingerprint:
                        encoder = load_encoder_dir(directory, generator=generator, device=device)
                        break
        except TlganError as exc:
            log.warning("no usable encoder for %r (%s); starting from random latents instead", generator.name, exc)
            encoder = None
        _ENCODERS[generator] = encoder
    return _ENCODERS[generator]


def invert_image(generator: Generator, classifier: Optional[Classifier], image_bytes: bytes, *,
                 encoder: Any = "auto", steps: int = DEFAULT_STEPS, optimize: bool = True,
                 name: str = "uploaded image") -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
    """Invert one encoded image file (PNG, JPEG, ...): returns (latent (D,), reconstruction (3, R, R), info).

    ``encoder="auto"`` uses the generator's shipped encoder if it has one; pass an
    encoder or None to choose. info: ``psnr_db``, ``encoder_psnr_db`` (or None),
    ``seconds``, ``steps``, ``notes`` (e.g. that the photo was cropped to a square).
    Unreadable or unsuitable files raise TlganError with a message for the user.
    """
    from tlgan.imaging import read_image

    image, notes = read_image(image_bytes, generator.img_resolution, name=name)
    if isinstance(encoder, str) and encoder == "auto":
        encoder = encoder_for(generator)
    result = invert(generator, image[None], encoder=encoder, classifier=classifier, optimize=optimize, steps=steps)
    info = {
        "psnr_db": round(float(result.psnr_db[0]), 3),
        "encoder_psnr_db": None if result.encoder_psnr_db is None else round(float(result.encoder_psnr_db[0]), 3),
        "seconds": round(result.seconds_per_image, 3),
        "steps": result.info.get("steps", 0),
        "notes": notes,
    }
    return result.latents[0], result.reconstructions[0], info
