"""Training the DCGAN generator on a folder of images.

Each step updates the discriminator once and the generator once, both with Adam
(beta1 = 0.5), with the non-saturating logistic loss (or the hinge loss):

    D:  softplus(D(G(z))) + softplus(-D(x))          G:  softplus(-D(G(z)))

optionally plus a lazy R1 penalty (gamma / 2) * |grad_x D(x)|^2 on real images, applied
every ``r1_every`` steps with its weight scaled by ``r1_every``. An exponential moving
average (EMA) of the generator's weights is what gets sampled and saved: it is smoother
than the raw weights. Because the EMA weights never ran through the network during
training, its BatchNorm statistics are re-measured on fixed latents before it is used.
"""
from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tlgan.data.images import BatchSampler, ImageFolder
from tlgan.errors import TlganError
from tlgan.imaging import save_grid
from tlgan.io import write_json
from tlgan.models.networks import DCGANDiscriminator, DCGANGenerator, save_pretrained
from tlgan.train.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from tlgan.train.common import (CHANNELS_LAST, STREAM_BATCHNORM, STREAM_LATENTS_D, STREAM_LATENTS_G, command_line,
                                resolve_device, settings_mismatch, step_generator)

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
    for e, m in zip(ema.parameters(), model.parameters()):
        e.lerp_(m, 1.0 - decay)
    for e, m in zip(ema.buffers(), model.buffers()):
        e.copy_(m)


@torch.no_grad()
def recalibrate_batchnorm(generator: DCGANGenerator, seed: int, batches: int = 8, batch_size: int = 256) -> None:
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
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    generator.eval()


def train_generator(data_dir: str | os.PathLike, out_dir: str | os.PathLike, *, steps: int, batch_size: int = 64,
                    lr: float = 2e-4, width: int = 32, z_dim: int = 512, resolution: int = 64, device: str = "cpu",
                    seed: int = 0, ema_decay: float = 0.999, sample_every: int = 500, checkpoint_every: int = 500,
                    resume: bool = False, name: str = "dcgan", loss: str = "nonsaturating", r1_gamma: float = 0.0,
                    r1_every: int = 16, spectral_norm: bool = True, flip: bool = False, d_width: Optional[int] = None,
                    progress: bool = True, on_step: Optional[Callable[[int, Dict[str, float]], None]] = None,
                    command: Optional[str] = None) -> Dict[str, Any]:
    """Train a :class:`DCGANGenerator` on every image under ``data_dir``; save it to ``out_dir``.

    Every ``sample_every`` steps (and at the end) the EMA generator draws a grid of 64
    faces from fixed latents (``Generator.sample_latents(64, seed)``) into
    ``OUT/samples/step-000500.png`` and so on; every ``checkpoint_every`` steps the whole
    state goes to ``OUT/checkpoint/``; at the end the EMA generator is saved with
    :func:`save_pretrained` as ``OUT/model.json`` + ``OUT/model.safetensors`` under
    ``name``. Batch ``k`` and the latents of step ``k`` depend only on (seed, k), so a
    resumed run equals an uninterrupted one. The learning rate is constant, so a finished
    run can also be continued to more ``steps`` with ``resume``.

    ``d_width`` is the discriminator's width (default: ``width``). ``flip`` mirrors
    training images at random. ``on_step(step, {"d_loss", "g_loss"})`` is called after
    every step.

    Returns {"out_dir", "steps", "d_loss", "g_loss" (running averages), "seconds_per_step"
    (optimisation only, without sample grids and checkpoints), "samples": [paths]}.
    """
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    if loss not in LOSSES:
        raise TlganError(f"unknown GAN loss {loss!r}; use {' or '.join(LOSSES)}")
    for label, value in (("steps", steps), ("sample_every", sample_every), ("checkpoint_every", checkpoint_every),
                         ("r1_every", r1_every), ("batch_size", batch_size)):
        if value < 1:
            raise TlganError(f"{label} must be at least 1, not {value}")
    if not 0.0 <= ema_decay < 1.0:
        raise TlganError(f"ema_decay must be in [0, 1), not {ema_decay}")
    if not resume and has_checkpoint(out_dir):
        raise TlganError(f"{out_dir} already holds a training checkpoint; pass --resume to continue it, "
                         f"or choose another --out folder")
    data = ImageFolder(data_dir, resolution, progress=progress)
    log.info("training on %d images at %d px", len(data), resolution)

    d_width = width if d_width is None else d_width
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = DCGANGenerator(z_dim=z_dim, resolution=resolution, width=width)
        D = DCGANDiscriminator(resolution=resolution, width=d_width, spectral_norm=spectral_norm)
    G.name = name
    # Channels-last convolutions run faster on CPU (oneDNN); saved weights are plain.
    G.to(dev, memory_format=CHANNELS_LAST).train()
    D.to(dev, memory_format=CHANNELS_LAST).train()
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    settings = {"data_dir": str(Path(data_dir).resolve()), "batch_size": batch_size, "lr": lr, "width": width,
                "d_width": d_width, "z_dim": z_dim, "resolution": resolution, "seed": seed, "ema_decay": ema_decay,
                "loss": loss, "r1_gamma": r1_gamma, "r1_every": r1_every, "spectral_norm": spectral_norm,
                "flip": flip}
    modules = {"G": G, "D": D, "G_ema": G_ema}
    optimizers = {"G": opt_g, "D": opt_d}

    start, avg = 0, {"d_loss": None, "g_loss": None}
    if resume and has_checkpoint(out_dir):
        manifest = load_checkpoint(out_dir, modules=modules, optimizers=optimizers)
        diff = settings_mismatch(manifest["info"].get("settings", {}), settings)
        if diff:
            raise TlganError(f"{out_dir}: cannot resume with other settings ({'; '.join(diff)}); pass the same ones")
        start = int(manifest["step"])
        avg.update(manifest["info"].get("averages", {}))
        log.info("resumed from step %d", start)
    elif resume:
        log.warning("%s holds no checkpoint; starting from step 0", out_dir)

    grid_latents = G.sample_latents(GRID_SIZE, seed=seed).to(dev)
    samples = []

    def write_samples(step: int) -> Path:
        preview = copy.deepcopy(G_ema)
        recalibrate_batchnorm(preview, seed)
        with torch.no_grad():
            images = preview.synthesize(grid_latents)
        path = out_dir / "samples" / f"step-{step:06d}.png"
        save_grid(images, path, nrow=8, padding=2)
        samples.append(str(path))
        return path

    def checkpoint(step: int) -> None:
        save_checkpoint(out_dir, step=step, modules=modules, optimizers=optimizers,
                        info={"settings": settings, "averages": avg, "kind": "generator"})

    sampler = BatchSampler(data.images, batch_size=batch_size, seed=seed, flip=flip, device=dev)
    bar = tqdm(total=steps, initial=start, desc="generator", unit="step", disable=None if progress else True)
    seconds, ran = 0.0, 0
    for step in range(start, steps):
        t0 = time.perf_counter()
        real, _ = sampler.batch(step)
        real = real.contiguous(memory_format=CHANNELS_LAST)
        z_d = torch.randn(batch_size, z_dim, generator=step_generator(seed, step, STREAM_LATENTS_D)).to(dev)
        z_g = torch.randn(batch_size, z_dim, generator=step_generator(seed, step, STREAM_LATENTS_G)).to(dev)

        # Discriminator step.
        D.requires_grad_(True)
        with torch.no_grad():
            fake = G.synthesize(z_d)
        d_loss = discriminator_loss(D(real), D(fake), loss)
        if r1_gamma > 0 and step % r1_every == 0:
            d_loss = d_loss + (r1_gamma / 2) * r1_every * r1_penalty(D, real)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        # Generator step; D's weights are constants here, so skip their gradients.
        D.requires_grad_(False)
        g_loss = generator_loss(D(G.synthesize(z_g)), loss)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

        # Ramp the EMA in so the early average does not stay anchored to the random init.
        update_ema(G_ema, G, min(ema_decay, (1.0 + step) / (10.0 + step)))

        values = {"d_loss": float(d_loss.detach()), "g_loss": float(g_loss.detach())}
        if any(v != v for v in values.values()):
            raise TlganError(f"the GAN loss became NaN at step {step + 1}; lower --lr (now {lr}) or add --r1-gamma")
        for k, v in values.items():
            avg[k] = v if avg[k] is None else 0.98 * avg[k] + 0.02 * v
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
    training = {**settings, "steps": steps, "device": str(dev), "train_images": len(data),
                "command": command if command is not None else command_line()}
    save_pretrained(G_ema.cpu(), out_dir, extra={"training": training,
                                                 "metrics": {"d_loss": avg["d_loss"], "g_loss": avg["g_loss"]}})
    write_json(out_dir / "metrics.json", result)
    log.info("saved the EMA generator %r to %s", name, out_dir)
    return result
