"""Inverting images by optimising latents, and the one-call ``invert`` that uses it.

For target images x (N, 3, R, R) and a starting guess (from the encoder, the best of a few
random latents in z, or ``w_avg`` in w and wp), Adam minimises per image

    L(latent) = reconstruction loss of G(latent) against x      (tlgan.inversion.losses)
              + prior_weight * (|z|^2 - D)^2 / D^2               (space z only)
              + noise_weight * noise regulariser                 (with optimize_noise)

The loss is computed on the generator's raw output (:func:`raw_images`; StyleGAN's
``synthesize`` clamps to [-1, 1], whose zero gradient would trap pixels that overshoot).
The prior keeps z near the shell |z|^2 ~ D where standard-normal latents live, so the
latent stays one the generator has seen and attribute edits behave. In wp (W+, Abdal et
al. 2019, "Image2StyleGAN") every synthesis layer gets its own w, which holds real photos
far better than one z or w; with ``optimize_noise`` the generator's noise maps are optimised
per image too, under the regulariser of Karras et al. 2020 (their auto-correlation at every
scale, pushed to 0, so that the noise cannot learn the image).

Each image has its own learning rate, halved when its loss has not improved for
``patience`` steps; an image whose loss still does not improve after ``max_decays``
halvings stops (and drops out of the batch), and the latent with the lowest loss seen is
returned.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tlgan.errors import TlganError
from tlgan.inversion.encoder import LatentEncoder, check_encoder_for, frozen, psnr_db
from tlgan.inversion.losses import reconstruction_loss
from tlgan.models.base import Classifier, Generator

log = logging.getLogger(__name__)

DEFAULT_STEPS = 100


def shell_prior(z: torch.Tensor) -> torch.Tensor:
    """(|z|^2 - D)^2 / D^2 per row (N,): 0 on the shell where N(0, I) latents concentrate."""
    d = z.shape[1]
    return (z.pow(2).sum(1) - d).pow(2) / (d * d)


# ----------------------------------------------------------------------------------------
# Images for losses, and noise maps
# ----------------------------------------------------------------------------------------


def raw_images(
    generator: Generator,
    latents: torch.Tensor,
    space: str = "z",
    noise: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Images (N, 3, R, R) for losses from latents of ``space``; gradients flow.

    A generator with a wp space draws through its :meth:`~tlgan.models.base.Generator.synthesize_raw`
    (no final clamp to [-1, 1]; ``noise`` replaces its noise maps by name, per-image maps
    (N, 1, R, R)); any other through ``synthesize`` (where ``noise`` is an error).
    """
    if "wp" in generator.spaces:
        return generator.synthesize_raw(generator.map_latents(latents, space, "wp"), noise)
    if noise:
        raise TlganError(
            f"generator {generator.name!r} has no noise maps to optimise; optimize_noise is for "
            f"StyleGAN2 generators"
        )
    return generator.synthesize(latents, space)


def noise_regularizer(noise: torch.Tensor) -> torch.Tensor:
    """Per-image auto-correlation penalty (N,) of noise maps (N, 1, R, R), summed over scales down to 8 x 8.

    At each scale the squared mean products of every pixel with its right and lower
    neighbours (wrapping around); white noise scores about 0, a map that copies image
    structure scores high.
    """
    total = noise.new_zeros(noise.shape[0])
    x = noise
    while True:
        total = total + (x * torch.roll(x, 1, dims=3)).flatten(1).mean(1).pow(2)
        total = total + (x * torch.roll(x, 1, dims=2)).flatten(1).mean(1).pow(2)
        if x.shape[-1] <= 8:
            break
        x = F.avg_pool2d(x, 2)
    return total


def _normalise_noise(noise: torch.Tensor) -> torch.Tensor:
    """Each map to zero mean and unit variance (the projector's step after every update)."""
    mean = noise.mean(dim=(1, 2, 3), keepdim=True)
    std = noise.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
    return (noise - mean) / std


# ----------------------------------------------------------------------------------------
# Starting points
# ----------------------------------------------------------------------------------------


@torch.no_grad()
def mean_latent(
    generator: Generator, space: str, n: int = 1, samples: int = 512, seed: int = 0
) -> torch.Tensor:
    """``n`` copies of the generator's average latent in ``space`` (w or wp): (n, *latent_shape(space)), CPU.

    StyleGAN2's tracked ``mapping.w_avg`` when it holds one (non-zero), else the mean of
    the mapping of ``samples`` latents of ``seed``. In z the average is 0.
    """
    shape = generator.latent_shape(space)
    if space == "z":
        return torch.zeros((n, *shape))
    w_avg = getattr(getattr(generator, "mapping", None), "w_avg", None)
    if isinstance(w_avg, torch.Tensor) and w_avg.shape == (generator.w_dim,) and bool(w_avg.abs().sum() > 0):
        w = w_avg.detach().float().cpu()[None]
    else:
        w = generator.sample_latents(samples, seed=seed, space="w").mean(0, keepdim=True)
    latent = w if space == "w" else w[:, None, :].repeat(1, generator.num_ws, 1)
    return latent.repeat(n, *([1] * len(shape))).clone()


class _RowAdam:
    """Adam over tensors whose first axis is the image: each row has its own step count and rate.

    Plain ``torch.optim.Adam`` shares one step count and learning rate over the tensor, but
    here each image halves its rate on its own plateau and leaves the batch on its own.
    """

    def __init__(self, tensors: list[torch.Tensor], lr: float):
        n = tensors[0].shape[0]
        device = tensors[0].device
        self.m = [torch.zeros_like(x) for x in tensors]
        self.v = [torch.zeros_like(x) for x in tensors]
        self.t = torch.zeros(n, device=device)
        self.rate = torch.full((n,), float(lr), device=device)
        self.beta1, self.beta2, self.eps = 0.9, 0.999, 1e-8

    def step(
        self,
        tensors: list[torch.Tensor],
        values: list[torch.Tensor],
        grads: list[torch.Tensor],
        rows: torch.Tensor,
        scales: list[float],
    ) -> None:
        """Write the updated ``values`` (the rows ``rows`` of each tensor) back into ``tensors``.

        ``scales`` multiplies the learning rate per tensor (Adam ignores the gradients' scale).
        """
        self.t[rows] += 1
        for x, val, g, m, v, scale in zip(tensors, values, grads, self.m, self.v, scales, strict=True):
            shape = (-1,) + (1,) * (x.ndim - 1)
            m[rows] = self.beta1 * m[rows] + (1 - self.beta1) * g
            v[rows] = self.beta2 * v[rows] + (1 - self.beta2) * g.pow(2)
            t = self.t[rows].view(shape)
            m_hat = m[rows] / (1 - self.beta1**t)
            v_hat = v[rows] / (1 - self.beta2**t)
            x[rows] = val - scale * self.rate[rows].view(shape) * m_hat / (v_hat.sqrt() + self.eps)

    def restart(self, rows: torch.Tensor) -> None:
        for m, v in zip(self.m, self.v, strict=True):
            m[rows] = 0.0
            v[rows] = 0.0
        self.t[rows] = 0


def optimize_latents(
    generator: Generator,
    targets: torch.Tensor,
    init: torch.Tensor,
    *,
    classifier: Classifier | None = None,
    steps: int = DEFAULT_STEPS,
    lr: float = 0.05,
    pixel_weight: float = 1.0,
    feature_weight: float = 0.05,
    gradient_weight: float = 0.5,
    prior_weight: float = 0.01,
    pixel_loss: str = "mse",
    patience: int = 8,
    max_decays: int = 2,
    tol: float = 1e-3,
    space: str = "z",
    optimize_noise: bool = False,
    noise_weight: float = 1.0,
    noise_lr: float | None = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Refine latents ``init`` (N, *latent_shape(space)) so that ``generator`` reproduces ``targets`` (N, 3, R, R).

    Runs at most ``steps`` Adam steps (learning rate ``lr`` per image, halved on a plateau
    of ``patience`` steps; a step improves the loss if it lowers the best by more than the
    relative ``tol``). The loss is :func:`tlgan.inversion.losses.reconstruction_loss`:
    ``feature_weight`` through ``classifier.features`` with a classifier, else
    ``gradient_weight`` on image gradients. ``prior_weight`` applies in z only. With
    ``optimize_noise`` (StyleGAN2) the noise maps are optimised per image from the stored
    ones, at ``noise_lr`` (default 10 x ``lr``), under ``noise_weight`` x
    :func:`noise_regularizer`.

    Returns (best latents on CPU, info) where info holds ``loss`` (N,) the best losses,
    ``init_loss`` (N,), ``steps`` run, ``image_steps`` (the summed number of steps over
    images, a measure of work), ``stopped_early``, ``history`` (mean loss of the active
    images per step), ``seconds``, ``loss_terms`` and, with ``optimize_noise``, ``noise``:
    {name: (N, R, R)} the best noise maps (CPU).
    """
    if steps < 0:
        raise TlganError(f"steps must be >= 0, not {steps}")
    device = generator.device
    targets = _check_targets(generator, targets).to(device)
    latents = generator.check_latents(init, space).detach().to(device=device, dtype=torch.float32).clone()
    if len(latents) != len(targets):
        raise TlganError(f"{len(targets)} target images but {len(latents)} initial latents")
    names: list[str] = []
    tensors = [latents]
    if optimize_noise:
        buffers = generator.noise_maps()
        if not buffers:
            raise TlganError(
                f"generator {generator.name!r} has no noise maps; optimize_noise is for StyleGAN2 generators"
            )
        names = sorted(buffers)
        tensors += [
            buffers[k].detach().float().reshape(1, 1, *buffers[k].shape[-2:]).repeat(len(latents), 1, 1, 1)
            for k in names
        ]
    n = len(latents)
    t0 = time.perf_counter()
    with frozen(generator, classifier):
        recon = reconstruction_loss(
            targets,
            classifier=classifier,
            pixel_weight=pixel_weight,
            feature_weight=feature_weight,
            gradient_weight=gradient_weight,
            pixel_loss=pixel_loss,
            announce=log.debug,
        )

        def losses(values: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
            noise = dict(zip(names, values[1:], strict=True)) if names else None
            loss = recon(raw_images(generator, values[0], space, noise), rows)
            if prior_weight > 0 and space == "z":
                loss = loss + prior_weight * shell_prior(values[0])
            for x in values[1:]:
                loss = loss + noise_weight * noise_regularizer(x)
            return loss

        best = [x.clone() for x in tensors]
        with torch.no_grad():
            best_loss = losses(tensors, torch.arange(n, device=device))
        init_loss = best_loss.clone()
        adam = _RowAdam(tensors, lr)
        noise_scale = (float(noise_lr) / float(lr)) if noise_lr is not None else 10.0
        since = torch.zeros(n, dtype=torch.long, device=device)  # steps since the last improvement
        decays = torch.zeros(n, dtype=torch.long, device=device)
        active = torch.arange(n, device=device)
        history: list[float] = []
        image_steps, steps_run = 0, 0
        bar = tqdm(
            total=steps,
            desc=f"inverting {n} image{'s' if n != 1 else ''}",
            unit="step",
            disable=None if progress else True,
            leave=False,
        )
        for step in range(1, steps + 1):
            if len(active) == 0:
                break
            values = [x[active].requires_grad_(True) for x in tensors]
            loss = losses(values, active)
            grads = list(torch.autograd.grad(loss.sum(), values))
            with torch.no_grad():
                loss = loss.detach()
                values = [v.detach() for v in values]
                # Keep what gave each image its lowest loss (measured before this update).
                improved = loss < best_loss[active] * (1.0 - tol)
                better = loss < best_loss[active]
                rows = active[better]
                for b, v in zip(best, values, strict=True):
                    b[rows] = v[better]
                best_loss[rows] = loss[better]
                since[active] = torch.where(improved, torch.zeros_like(since[active]), since[active] + 1)
                # The noise maps move faster than the latent (as in the StyleGAN2 projector).
                adam.step(tensors, values, grads, active, [1.0] + [noise_scale] * len(names))
                for x in tensors[1:]:
                    x[active] = _normalise_noise(x[active])
                # Plateau: halve the learning rate, restart from the best; give up after max_decays.
                stalled = active[since[active] >= patience]
                if len(stalled):
                    decays[stalled] += 1
                    adam.rate[stalled] *= 0.5
                    for x, b in zip(tensors, best, strict=True):
                        x[stalled] = b[stalled]
                    since[stalled] = 0
                    adam.restart(stalled)
                    active = active[decays[active] <= max_decays]
            image_steps += len(values[0])
            steps_run = step
            history.append(float(loss.mean()))
            bar.update(1)
            bar.set_postfix(loss=f"{history[-1]:.4f}", active=len(active))
        bar.close()
    info: dict[str, Any] = {
        "loss": best_loss.cpu(),
        "init_loss": init_loss.cpu(),
        "steps": steps_run,
        "image_steps": image_steps,
        "stopped_early": bool(len(active) == 0 and steps_run < steps),
        "history": history,
        "seconds": time.perf_counter() - t0,
        "loss_terms": recon.terms,
    }
    if names:
        info["noise"] = {k: b[:, 0].cpu() for k, b in zip(names, best[1:], strict=True)}
    return best[0].cpu(), info


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
        raise TlganError(
            f"image values span [{lo:.3g}, {hi:.3g}] but must lie in [-1, 1]; "
            f"for 0..255 pixels use x / 127.5 - 1 (tlgan.imaging.load_image does this)"
        )
    res = generator.img_resolution
    if images.shape[-2:] != (res, res):
        images = F.interpolate(images, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
    return images.clamp(-1, 1)


@torch.no_grad()
def random_search_init(
    generator: Generator,
    targets: torch.Tensor,
    *,
    candidates: int = 64,
    seed: int = 0,
    space: str = "z",
    batch_size: int = 64,
) -> torch.Tensor:
    """For each target, the one of ``candidates`` latents (samples 0.. of ``seed``) whose image is closest (MSE).

    The start used when there is no encoder. Returns (N, D) on CPU.
    """
    device = next(iter(generator.parameters()), torch.empty(0)).device
    targets = _check_targets(generator, targets).to(device)
    pool = generator.sample_latents(candidates, seed=seed, space=space)
    dists = []
    with frozen(generator):
        for start in range(0, candidates, batch_size):
            images = generator.synthesize(pool[start : start + batch_size].to(device), space)
            dists.append(torch.cdist(targets.flatten(1), images.flatten(1)).cpu())
    return pool[torch.cat(dists, 1).argmin(1)]


@dataclass
class InversionResult:
    """What :func:`invert` found for N images.

    ``latents`` (N, *latent_shape(space)) and ``reconstructions`` (N, 3, R, R) in [-1, 1]
    (both CPU); ``psnr_db`` (N,) of the reconstructions against the targets;
    ``encoder_psnr_db`` (N,) of the encoder's guess alone (None without an encoder);
    ``seconds_per_image`` the wall time of the whole inversion divided by N; ``noise``
    {name: (N, R, R)} the optimised StyleGAN2 noise maps (None unless ``optimize_noise``);
    ``info`` the optimiser's details, with ``encoder_seconds`` and ``optimize_seconds``.
    """

    latents: torch.Tensor
    reconstructions: torch.Tensor
    psnr_db: torch.Tensor
    seconds_per_image: float
    encoder_psnr_db: torch.Tensor | None = None
    space: str = "z"
    info: dict[str, Any] = field(default_factory=dict)
    noise: dict[str, torch.Tensor] | None = None


def start_latents(
    generator: Generator,
    targets: torch.Tensor,
    space: str = "z",
    *,
    encoder: LatentEncoder | None = None,
    candidates: int = 64,
    seed: int = 0,
) -> torch.Tensor:
    """Where the latent search of ``targets`` (N, 3, R, R) starts, (N, *latent_shape(space)) on CPU.

    The encoder's guess when there is one (made in the encoder's space, z or wp, and mapped
    forward to ``space``); else in z the best of ``candidates`` random latents, and in w and wp
    the average latent (``w_avg``).
    """
    generator.check_space(space)
    if encoder is not None:
        with torch.no_grad(), frozen(encoder, generator):
            guess = encoder.to(generator.device)(targets.to(generator.device)).float()
            return generator.map_latents(guess, encoder.space, space).float().cpu()
    if space == "z":
        return random_search_init(generator, targets, candidates=candidates, seed=seed)
    return mean_latent(generator, space, n=len(targets))


def invert(
    generator: Generator,
    images: torch.Tensor,
    *,
    encoder: LatentEncoder | None = None,
    classifier: Classifier | None = None,
    optimize: bool = True,
    steps: int = DEFAULT_STEPS,
    space: str = "z",
    lr: float | None = None,
    pixel_weight: float = 1.0,
    feature_weight: float = 0.05,
    gradient_weight: float = 0.5,
    prior_weight: float = 0.01,
    patience: int = 8,
    batch_size: int = 32,
    candidates: int = 64,
    seed: int = 0,
    optimize_noise: bool = False,
    noise_weight: float = 1.0,
    progress: bool = False,
) -> InversionResult:
    """Latents in ``space`` whose generated images reproduce ``images`` (N, 3, R, R) in [-1, 1] (resized to fit).

    The start is :func:`start_latents` (the encoder's guess, or random search in z, or
    ``w_avg`` in w/wp); with ``optimize`` it is refined by :func:`optimize_latents` in batches
    of ``batch_size`` images. ``lr`` defaults to 0.05 in z and 0.01 in w and wp (where one
    unit is a larger step). Without a classifier the loss is pixels plus image gradients,
    and a log line says so.
    """
    t0 = time.perf_counter()
    generator.check_space(space)
    if optimize_noise and not generator.noise_maps():
        raise TlganError(
            f"optimize_noise needs a generator with noise maps (StyleGAN2, StyleGAN); {generator.name!r} has none"
        )
    device = generator.device
    targets = _check_targets(generator, images)
    if encoder is not None:
        check_encoder_for(encoder, generator, space)
    if lr is None:
        lr = 0.05 if space == "z" else 0.01
    if optimize and steps > 0:
        log.info(
            "inverting %d image(s) in %s: %s",
            len(targets),
            space,
            reconstruction_loss(
                targets[:1],
                classifier=classifier,
                feature_weight=feature_weight,
                gradient_weight=gradient_weight,
            ).terms
            + ("" if classifier is not None else " (no classifier given: no feature loss)"),
        )
    latents, recons, psnrs, enc_psnrs = [], [], [], []
    noises: dict[str, list[torch.Tensor]] = {}
    info: dict[str, Any] = {
        "steps": 0,
        "image_steps": 0,
        "optimized": bool(optimize and steps > 0),
        "encoder_seconds": 0.0,
        "optimize_seconds": 0.0,
    }
    for start in range(0, len(targets), batch_size):
        chunk = targets[start : start + batch_size].to(device)
        t_start = time.perf_counter()
        init = start_latents(generator, chunk, space, encoder=encoder, candidates=candidates, seed=seed)
        if encoder is not None:
            with torch.no_grad(), frozen(generator):
                enc_psnrs.append(psnr_db(generator.synthesize(init.to(device), space), chunk).cpu())
            info["encoder_seconds"] += time.perf_counter() - t_start
        noise = None
        if optimize and steps > 0:
            t_opt = time.perf_counter()
            found, opt_info = optimize_latents(
                generator,
                chunk,
                init,
                classifier=classifier,
                steps=steps,
                lr=lr,
                pixel_weight=pixel_weight,
                feature_weight=feature_weight,
                gradient_weight=gradient_weight,
                prior_weight=prior_weight,
                patience=patience,
                space=space,
                optimize_noise=optimize_noise,
                noise_weight=noise_weight,
                progress=progress,
            )
            info["optimize_seconds"] += time.perf_counter() - t_opt
            info["steps"] = max(info["steps"], opt_info["steps"])
            info["image_steps"] += opt_info["image_steps"]
            info["loss_terms"] = opt_info["loss_terms"]
            noise = opt_info.get("noise")
        else:
            found = init.cpu()
        with torch.no_grad(), frozen(generator):
            maps = None if noise is None else {k: v[:, None].to(device) for k, v in noise.items()}
            recon = raw_images(generator, found.to(device), space, maps).clamp(-1, 1).float().cpu()
        latents.append(found.cpu())
        recons.append(recon)
        psnrs.append(psnr_db(recon, chunk.cpu()))
        for k, v in (noise or {}).items():
            noises.setdefault(k, []).append(v)
    seconds = time.perf_counter() - t0
    n = max(1, len(targets))
    info["encoder_seconds_per_image"] = info["encoder_seconds"] / n
    info["optimize_seconds_per_image"] = info["optimize_seconds"] / n
    return InversionResult(
        latents=torch.cat(latents),
        reconstructions=torch.cat(recons),
        psnr_db=torch.cat(psnrs),
        seconds_per_image=seconds / n,
        encoder_psnr_db=torch.cat(enc_psnrs) if enc_psnrs else None,
        space=space,
        info=info,
        noise={k: torch.cat(v) for k, v in noises.items()} if noises else None,
    )


def invert_image(
    generator: Generator,
    classifier: Classifier | None,
    image_bytes: bytes,
    *,
    encoder: Any = "auto",
    steps: int = DEFAULT_STEPS,
    optimize: bool = True,
    name: str = "uploaded image",
    space: str = "z",
    crop: tuple[int, int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Invert one encoded image file (PNG, JPEG, ...): returns (latent, reconstruction (3, R, R), info).

    The latent has ``generator.latent_shape(space)``.

    ``space`` is where the latent is searched (the studio passes its own); ``crop`` an
    (x, y, w, h) box of the photo (default: its centre square).

    ``encoder="auto"`` uses the generator's shipped encoder if it has one; pass an
    encoder or None to choose. info: ``psnr_db``, ``encoder_psnr_db`` (or None),
    ``seconds``, ``steps``, ``notes`` (e.g. that the photo was cropped to a square).
    Unreadable or unsuitable files raise TlganError with a message for the user.
    """
    from tlgan.imaging import read_image

    image, notes = read_image(image_bytes, generator.img_resolution, name=name, crop=crop)
    if isinstance(encoder, str) and encoder == "auto":
        from tlgan.models.zoo import bundled_encoder

        encoder = bundled_encoder(generator)
    result = invert(
        generator,
        image[None],
        encoder=encoder,
        classifier=classifier,
        optimize=optimize,
        steps=steps,
        space=space,
    )
    info = {
        "psnr_db": round(float(result.psnr_db[0]), 3),
        "encoder_psnr_db": None
        if result.encoder_psnr_db is None
        else round(float(result.encoder_psnr_db[0]), 3),
        "seconds": round(result.seconds_per_image, 3),
        "steps": result.info.get("steps", 0),
        "notes": notes,
    }
    return result.latents[0], result.reconstructions[0], info
