"""Training a GAN generator (DCGAN or StyleGAN2) on a folder of images.

Each step updates the discriminator once and the generator once, both with Adam, with
the non-saturating logistic loss (or the hinge loss):

    D:  softplus(D(G(z))) + softplus(-D(x))          G:  softplus(-D(G(z)))

optionally plus a lazy R1 penalty (gamma / 2) * |grad_x D(x)|^2 on real images, applied
every ``r1_every`` steps with its weight scaled by ``r1_every``. An exponential moving
average (EMA) of the generator's weights is what gets sampled and saved: it is smoother
than the raw weights. Because the EMA weights never ran through the network during
training, the DCGAN's BatchNorm statistics are re-measured on fixed latents before it is used.

For StyleGAN2 the regularisers follow the paper: R1 and the optional path-length penalty
are lazy (their own optimiser steps every few steps), the generator's ``w_avg`` is tracked
for truncation, and styles are mixed; see :func:`train_generator`.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tlgan.data.images import BatchSampler, ImageFolder
from tlgan.errors import TlganError
from tlgan.imaging import save_grid
from tlgan.io import write_json
from tlgan.models.networks import DCGANDiscriminator, DCGANGenerator, save_pretrained
from tlgan.models.stylegan2 import NOISE_MODES, StyleGAN2Discriminator
from tlgan.train.checkpoint import has_checkpoint, restore_checkpoint, save_checkpoint
from tlgan.train.common import (
    CHANNELS_LAST,
    STREAM_BATCHNORM,
    STREAM_LATENTS_D,
    STREAM_LATENTS_G,
    STREAM_MIXING_D,
    STREAM_MIXING_G,
    STREAM_PATH_LENGTH,
    STREAM_SYNTHESIS_NOISE,
    command_line,
    resolve_device,
    settings_mismatch,
    step_generator,
)
from tlgan.train.distill import ARCHS, make_student
from tlgan.train.stylegan2 import path_length_penalty, training_images, training_wp

log = logging.getLogger(__name__)

LOSSES = ("nonsaturating", "hinge")
GRID_SIZE = 64


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean discriminator loss over logits (N,) of real and generated images."""
    if loss == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean generator loss over the discriminator's logits (N,) of generated images."""
    if loss == "hinge":
        return -fake_logits.mean()
    return F.softplus(-fake_logits).mean()


def r1_penalty(discriminator: torch.nn.Module, real: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of |grad_x D(x)|^2 at real images x (N, 3, R, R)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(real).sum(), real, create_graph=True)
    return grad.pow(2).sum(dim=(1, 2, 3)).mean()


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, for parameters; buffers are copied."""
    for e, m in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(m, 1.0 - decay)
    for e, m in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(m)


@torch.no_grad()
def recalibrate_batchnorm(
    generator: DCGANGenerator, seed: int, batches: int = 8, batch_size: int = 256
) -> None:
    """Re-measure ``generator``'s BatchNorm running statistics as exact averages over
    ``batches`` x ``batch_size`` latents drawn from ``seed``; leaves it in eval mode."""
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    device = next(generator.parameters()).device
    generator.train()
    for b in range(batches):
        z = torch.randn(batch_size, generator.z_dim, generator=step_generator(seed, b, STREAM_BATCHNORM))
        generator.synthesize(z.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    generator.eval()


def train_generator(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float | None = None,
    width: int = 32,
    z_dim: int = 512,
    resolution: int = 64,
    device: str = "cpu",
    seed: int = 0,
    ema_decay: float = 0.999,
    sample_every: int = 500,
    checkpoint_every: int = 500,
    resume: bool = False,
    name: str | None = None,
    loss: str = "nonsaturating",
    r1_gamma: float | None = None,
    r1_every: int = 16,
    spectral_norm: bool = True,
    flip: bool = False,
    d_width: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    command: str | None = None,
    arch: str = "dcgan",
    arch_kwargs: dict[str, Any] | None = None,
    mixing_prob: float = 0.9,
    pl_weight: float = 0.0,
    pl_every: int = 4,
    noise_mode: str = "random",
    precision: str = "auto",
) -> dict[str, Any]:
    """Train a generator of ``arch`` on every image under ``data_dir``; save it to ``out_dir``.

    Every ``sample_every`` steps (and at the end) the EMA generator draws a grid of 64
    faces from fixed latents (``Generator.sample_latents(64, seed)``) into
    ``OUT/samples/step-000500.png`` and so on; every ``checkpoint_every`` steps the whole
    state goes to ``OUT/checkpoint/``; at the end the EMA generator is saved with
    :func:`save_pretrained` as ``OUT/model.json`` + ``OUT/model.safetensors`` under
    ``name``. Batch ``k`` and the latents of step ``k`` depend only on (seed, k), so a
    resumed run equals an uninterrupted one. The learning rate is constant, so a finished
    run can also be continued to more ``steps`` with ``resume``.

    ``arch="dcgan"``: :class:`DCGANGenerator` of ``width`` against a DCGAN discriminator of
    ``d_width`` (default ``width``, spectrally normalised unless ``spectral_norm`` is false),
    Adam(lr 2e-4, betas 0.5, 0.999), no R1 unless ``r1_gamma`` is given.

    ``arch="stylegan2"``: :class:`StyleGAN2Generator` (``arch_kwargs``: ``channel_base``,
    ``channel_max``, ``w_dim``, ``mapping_layers``, ...; ``width`` is unused) against a
    :class:`StyleGAN2Discriminator` of the same channel sizes, as in the paper: Adam(lr 2.5e-3,
    betas 0, 0.99) with the lazy-regularisation correction of lr and betas, R1 with
    ``r1_gamma`` (default 0.0002 R^2 / batch, NVlabs' heuristic) every ``r1_every`` steps,
    style mixing with ``mixing_prob``, ``w_avg`` tracking (so truncation works on the saved
    model), per-pixel noise ``noise_mode`` ("random" in training; the saved model uses its
    constant noise), and optionally the path-length penalty (``pl_weight``, e.g. 2, every
    ``pl_every`` steps on half the batch). ``precision``: "auto" (bfloat16 autocast on CUDA,
    float32 elsewhere), "bf16", "fp16" (CUDA only; a gradient scaler guards float16) or "fp32";
    the regularisers always run in float32.

    ``flip`` mirrors training images at random. ``on_step(step, {"d_loss", "g_loss", ...})``
    is called after every step.

    Returns {"out_dir", "steps", "d_loss", "g_loss" (running averages), "seconds_per_step"
    (optimisation only, without sample grids and checkpoints), "samples": [paths]}.
    """
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    if loss not in LOSSES:
        raise TlganError(f"unknown GAN loss {loss!r}; use {' or '.join(LOSSES)}")
    if arch not in ARCHS:
        raise TlganError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    for label, value in (
        ("steps", steps),
        ("sample_every", sample_every),
        ("checkpoint_every", checkpoint_every),
        ("r1_every", r1_every),
        ("batch_size", batch_size),
        ("pl_every", pl_every),
    ):
        if value < 1:
            raise TlganError(f"{label} must be at least 1, not {value}")
    if not 0.0 <= ema_decay < 1.0:
        raise TlganError(f"ema_decay must be in [0, 1), not {ema_decay}")
    if not 0.0 <= mixing_prob <= 1.0:
        raise TlganError(f"mixing_prob must be in [0, 1], not {mixing_prob}")
    if noise_mode not in NOISE_MODES:
        raise TlganError(f"noise_mode must be one of {', '.join(NOISE_MODES)}, not {noise_mode!r}")
    amp_dtype = autocast_dtype(precision, dev)
    if not resume and has_checkpoint(out_dir):
        raise TlganError(
            f"{out_dir} already holds a training checkpoint; pass --resume to continue it, "
            f"or choose another --out folder"
        )
    data = ImageFolder(data_dir, resolution, progress=progress)
    log.info("training on %d images at %d px", len(data), resolution)

    stylegan = arch == "stylegan2"
    name = name or arch
    lr = (2.5e-3 if stylegan else 2e-4) if lr is None else float(lr)
    if r1_gamma is None:
        r1_gamma = 0.0002 * resolution**2 / batch_size if stylegan else 0.0
    d_width = width if d_width is None else d_width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = make_student(arch, z_dim, resolution, width, arch_kwargs)
        if stylegan:
            sizes = {k: v for k, v in G.config_kwargs.items() if k in ("channel_base", "channel_max")}
            D = StyleGAN2Discriminator(img_resolution=resolution, **sizes)
        else:
            D = DCGANDiscriminator(resolution=resolution, width=d_width, spectral_norm=spectral_norm)
    G.name = name
    memory_format = torch.contiguous_format if stylegan else CHANNELS_LAST
    # Channels-last convolutions run faster on CPU (oneDNN) for the DCGAN; saved weights are plain.
    G.to(dev, memory_format=memory_format).train()
    D.to(dev, memory_format=memory_format).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    if stylegan:
        G.noise_mode = noise_mode
        G_ema.noise_mode = "const"
        # Lazy regularisation: a regulariser every k steps makes k + 1 updates per k steps,
        # so lr and betas are scaled to keep the statistics of a plain run (as NVlabs' code does).
        ratio_d = r1_every / (r1_every + 1) if r1_gamma > 0 else 1.0
        ratio_g = pl_every / (pl_every + 1) if pl_weight > 0 else 1.0
        opt_g = torch.optim.Adam(G.parameters(), lr=lr * ratio_g, betas=(0.0, 0.99**ratio_g), eps=1e-8)
        opt_d = torch.optim.Adam(D.parameters(), lr=lr * ratio_d, betas=(0.0, 0.99**ratio_d), eps=1e-8)
    else:
        opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    settings = {
        "data_dir": str(Path(data_dir).resolve()),
        "batch_size": batch_size,
        "lr": lr,
        "width": width,
        "d_width": d_width,
        "z_dim": z_dim,
        "resolution": resolution,
        "seed": seed,
        "ema_decay": ema_decay,
        "loss": loss,
        "r1_gamma": r1_gamma,
        "r1_every": r1_every,
        "spectral_norm": spectral_norm,
        "flip": flip,
    }
    if stylegan:
        settings.update(
            {
                "arch": arch,
                "arch_kwargs": dict(arch_kwargs or {}),
                "mixing_prob": mixing_prob,
                "pl_weight": pl_weight,
                "pl_every": pl_every,
                "noise_mode": noise_mode,
            }
        )
    modules = {"G": G, "D": D, "G_ema": G_ema}
    optimizers = {"G": opt_g, "D": opt_d}

    start, avg = 0, {"d_loss": None, "g_loss": None}
    pl_mean = torch.zeros([], device=dev)
    if resume and has_checkpoint(out_dir):
        manifest = restore_checkpoint(out_dir, modules=modules, optimizers=optimizers)
        diff = settings_mismatch(manifest["info"].get("settings", {}), settings)
        if diff:
            raise TlganError(
                f"{out_dir}: cannot resume with other settings ({'; '.join(diff)}); pass the same ones"
            )
        start = int(manifest["step"])
        avg.update(manifest["info"].get("averages", {}))
        pl_mean.fill_(float(manifest["info"].get("pl_mean", 0.0)))
        log.info("resumed from step %d", start)
    elif resume:
        log.warning("%s holds no checkpoint; starting from step 0", out_dir)

    grid_latents = G.sample_latents(GRID_SIZE, seed=seed).to(dev)
    samples = []

    def write_samples(step: int) -> Path:
        preview = copy.deepcopy(G_ema)
        if not stylegan:
            recalibrate_batchnorm(preview, seed)
        with torch.no_grad():
            images = preview.synthesize(grid_latents)
        path = out_dir / "samples" / f"step-{step:06d}.png"
        save_grid(images, path, nrow=8, padding=2)
        samples.append(str(path))
        return path

    def checkpoint(step: int) -> None:
        info = {"settings": settings, "averages": avg, "kind": "generator"}
        if stylegan:
            info["pl_mean"] = float(pl_mean)  # float32 -> float64 -> JSON and back is exact
        save_checkpoint(out_dir, step=step, modules=modules, optimizers=optimizers, info=info)

    def autocast():
        return torch.autocast(dev.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    scaler = torch.amp.GradScaler(dev.type, enabled=amp_dtype == torch.float16)

    def update(opt: torch.optim.Optimizer, objective: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        scaler.scale(objective).backward()
        scaler.step(opt)
        scaler.update()

    def fake_images(z: torch.Tensor, stream: int, step: int) -> torch.Tensor:
        if stylegan:
            return training_images(G, z, mixing_prob=mixing_prob, rng=step_generator(seed, step, stream))
        return G.synthesize(z)

    sampler = BatchSampler(data.images, batch_size=batch_size, seed=seed, flip=flip, device=dev)
    bar = tqdm(total=steps, initial=start, desc="generator", unit="step", disable=None if progress else True)
    seconds, ran = 0.0, 0
    # The synthesis noise draws from the global generator: reseed it every step from (seed, step)
    # so a resumed run draws what a straight one does; fork_rng gives the caller's state back.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        for step in range(start, steps):
            torch.manual_seed(step_generator(seed, step, STREAM_SYNTHESIS_NOISE).initial_seed())
            t0 = time.perf_counter()
            real, _ = sampler.batch(step)
            real = real.contiguous(memory_format=memory_format)
            z_d = torch.randn(batch_size, z_dim, generator=step_generator(seed, step, STREAM_LATENTS_D)).to(
                dev
            )
            z_g = torch.randn(batch_size, z_dim, generator=step_generator(seed, step, STREAM_LATENTS_G)).to(
                dev
            )
            values: dict[str, float] = {}

            # Discriminator step.
            D.requires_grad_(True)
            with torch.no_grad(), autocast():
                fake = fake_images(z_d, STREAM_MIXING_D, step)
            with autocast():
                d_loss = discriminator_loss(D(real).float(), D(fake).float(), loss)
            r1_term = None
            if r1_gamma > 0 and step % r1_every == 0:
                r1 = r1_penalty(D, real)
                values["r1"] = float(r1.detach())
                r1_term = (r1_gamma / 2) * r1_every * r1
                if not stylegan:
                    d_loss = d_loss + r1_term
            update(opt_d, d_loss)
            if r1_term is not None and stylegan:
                update(opt_d, r1_term)  # StyleGAN2's lazy regularisation is a step of its own

            # Generator step; D's weights are constants here, so skip their gradients.
            D.requires_grad_(False)
            with autocast():
                g_loss = generator_loss(D(fake_images(z_g, STREAM_MIXING_G, step)).float(), loss)
            update(opt_g, g_loss)
            if stylegan and pl_weight > 0 and step % pl_every == 0:
                n_pl = max(1, batch_size // 2)
                pl_rng = step_generator(seed, step, STREAM_PATH_LENGTH)
                wp = training_wp(
                    G,
                    torch.randn(n_pl, z_dim, generator=pl_rng).to(dev),
                    track=False,
                    mixing_prob=mixing_prob,
                    rng=pl_rng,
                )
                noise = torch.randn(n_pl, G.img_channels, resolution, resolution, generator=pl_rng).to(dev)
                pl, _ = path_length_penalty(G, wp, pl_mean, noise)
                values["pl"] = float(pl.detach())
                update(opt_g, pl * pl_weight * pl_every)

            # Ramp the EMA in so the early average does not stay anchored to the random init.
            update_ema(G_ema, G, min(ema_decay, (1.0 + step) / (10.0 + step)))

            values.update({"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())})
            if any(v != v for v in values.values()):
                raise TlganError(
                    f"the GAN loss became NaN at step {step + 1}; lower --lr (now {lr}) or raise --r1-gamma"
                )
            for k in ("d_loss", "g_loss"):
                avg[k] = values[k] if avg[k] is None else 0.98 * avg[k] + 0.02 * values[k]
            seconds += time.perf_counter() - t0
            ran += 1
            bar.update(1)
            bar.set_postfix(d=f"{avg['d_loss']:.3f}", g=f"{avg['g_loss']:.3f}")
            if (step + 1) % sample_every == 0:
                write_samples(step + 1)
            if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
                checkpoint(step + 1)
            if on_step is not None:
                on_step(step + 1, values)
    bar.close()
    checkpoint(steps)
    if not samples or not samples[-1].endswith(f"step-{steps:06d}.png"):
        write_samples(steps)

    if not stylegan:
        recalibrate_batchnorm(G_ema, seed)
    result = {
        "out_dir": str(out_dir),
        "steps": steps,
        "d_loss": avg["d_loss"],
        "g_loss": avg["g_loss"],
        "seconds_per_step": seconds / ran if ran else None,
        "train_images": len(data),
        "samples": samples,
    }
    training = {
        **settings,
        "steps": steps,
        "device": str(dev),
        "train_images": len(data),
        "method": "adversarial",
        "precision": str(amp_dtype or torch.float32).replace("torch.", ""),
        "command": command if command is not None else command_line(),
    }
    save_pretrained(
        G_ema.cpu(),
        out_dir,
        extra={"training": training, "metrics": {"d_loss": avg["d_loss"], "g_loss": avg["g_loss"]}},
    )
    write_json(out_dir / "metrics.json", result)
    log.info("saved the EMA generator %r to %s", name, out_dir)
    return result


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None: plain float32).

    "auto" is bfloat16 on a CUDA device that supports it, else float32; "bf16" and "fp16"
    are refused off CUDA (CPU autocast would be slower here, not faster).
    """
    choices = ("auto", "fp32", "bf16", "fp16")
    if precision not in choices:
        raise TlganError(f"precision must be one of {', '.join(choices)}, not {precision!r}")
    if precision == "fp32":
        return None
    if device.type != "cuda":
        if precision == "auto":
            return None
        raise TlganError(f"precision {precision!r} is for CUDA devices; on {device.type} use fp32 (or auto)")
    if precision == "fp16":
        return torch.float16
    if precision == "auto" and not torch.cuda.is_bf16_supported():
        return None
    return torch.bfloat16
