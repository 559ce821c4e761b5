"""Training the inversion encoder (:mod:`tlgan.inversion.encoder`) on faces the generator makes itself.

It is trained on pairs (z, G(z)) that the frozen generator makes, so no data set is needed:

    loss = latent_weight * |E(G(z)) - z|^2 / D                      (latent regression)
         + pixel_weight  * |G(E(G(z))) - G(z)|^2 / (3 R^2)          (reconstruction through G)
         + feature_weight * classifier feature distance             (when a classifier is given)

and, with ``real_data``, the reconstruction terms on real images too (their latent is
unknown). For StyleGAN generators a :class:`~tlgan.inversion.encoder.WPEncoder` predicts wp
instead (``space="wp"``): one w plus per-layer offsets kept small by an L2 penalty, as in e4e.

Batch ``k`` depends only on (seed, k), and the whole state goes into the pickle-free training
checkpoint of :mod:`tlgan.train.checkpoint`, so ``resume=True`` continues a run bit for bit.
The checkpoint lives in ``OUT/encoder-checkpoint/`` (an encoder is often trained into its
generator's own folder, whose ``OUT/checkpoint/`` belongs to the generator's training).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tlgan.errors import TlganError
from tlgan.inversion.encoder import (
    evaluate_encoder,
    frozen,
    generator_fingerprint,
    make_encoder,
    save_encoder,
)
from tlgan.inversion.losses import feature_distance
from tlgan.io import write_json
from tlgan.models.base import Classifier, Generator
from tlgan.train.checkpoint import has_checkpoint, restore_checkpoint, save_checkpoint
from tlgan.train.common import settings_mismatch

log = logging.getLogger(__name__)

CHECKPOINT_ROOT = "encoder-checkpoint"
"""The folder under OUT that holds the encoder's training checkpoint (``checkpoint/`` inside it)."""


def _learning_rate(step: int, steps: int, lr: float) -> float:
    """Linear warm-up over min(50, steps / 10) steps, then cosine decay to 5% of ``lr`` at ``steps``."""
    warmup = min(50, steps // 10)
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t)))


def _real_sampler(real_data, resolution: int, batch_size: int, seed: int, device):
    """``real_data`` (a folder path, uint8 or float images (N, 3, R, R)) -> a BatchSampler."""
    from tlgan.data.images import BatchSampler, ImageFolder

    if isinstance(real_data, (str, os.PathLike)):
        images = ImageFolder(real_data, resolution=resolution).images
    elif isinstance(real_data, torch.Tensor):
        images = real_data
        if images.dtype != torch.uint8:
            images = ((images.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    else:
        raise TlganError(
            f"real_data must be a folder of images or an image tensor, not {type(real_data).__name__}"
        )
    if (
        images.ndim != 4
        or images.shape[1] != 3
        or images.shape[-1] != resolution
        or images.shape[-2] != resolution
    ):
        raise TlganError(f"real images must be (N, 3, {resolution}, {resolution}); got {tuple(images.shape)}")
    return BatchSampler(images, batch_size=batch_size, seed=seed + 1, flip=True, device=device)


def train_encoder(
    generator: Generator,
    out_dir: str | os.PathLike,
    *,
    steps: int = 3000,
    batch_size: int = 32,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    seed: int = 0,
    classifier: Classifier | None = None,
    real_data=None,
    resume: bool = False,
    width: int = 32,
    latent_weight: float = 1.0,
    pixel_weight: float = 1.0,
    feature_weight: float = 0.1,
    checkpoint_every: int = 250,
    generator_spec: str | None = None,
    progress: bool = True,
    space: str = "z",
    offset_weight: float = 1.0,
) -> dict[str, Any]:
    """Train an encoder for ``generator`` and save it into ``out_dir``.

    ``space="z"``: a :class:`LatentEncoder`, latent loss |E(x) - z|^2 / D. ``space="wp"`` (StyleGAN
    generators): a :class:`WPEncoder` whose w is centred on the generator's ``w_avg``; its latent
    loss is the mean squared error to the true wp (w repeated) divided by the mean square of
    w - w_avg, and ``offset_weight`` x the mean square of its per-layer offsets (same scale)
    keeps them small (an e4e-style encoder).

    Each step draws latents ``z`` of samples ``step * batch_size ...`` of ``seed`` (so a
    resumed run sees the same batches), makes ``x = G(z)`` without gradients and minimises
    the loss in the module docstring. ``real_data`` (a folder, or images (N, 3, R, R)) adds
    an equal-sized batch of real images trained through reconstruction only. Checkpoints
    (:mod:`tlgan.train.checkpoint`: safetensors + JSON, no pickles) go to
    ``out_dir/encoder-checkpoint/checkpoint/`` every ``checkpoint_every`` steps; ``resume=True``
    continues from there, and refuses other settings (TlganError). The final encoder is
    ``out_dir/encoder.{json,safetensors}``. Returns a summary: final losses, and the
    encoder's PSNR (dB) on 64 fresh generated faces (samples of seed ``seed + 1000``).
    """
    if steps < 1 or batch_size < 1:
        raise TlganError(f"steps and batch_size must be at least 1 (got {steps}, {batch_size})")
    if classifier is None:
        feature_weight = 0.0
    out_dir = Path(out_dir)
    ckpt_root = out_dir / CHECKPOINT_ROOT
    torch_device = torch.device(device)
    generator = generator.to(torch_device)
    if classifier is not None:
        classifier = classifier.to(torch_device)
    encoder = make_encoder(generator, space, width)
    encoder.apply(_reset(seed))  # initial weights depend only on the seed
    w_scale = 1.0
    if space == "wp":
        w_avg, w_scale = _w_statistics(generator, seed)
        with torch.no_grad():
            encoder.w_avg.copy_(w_avg)
            encoder.head_offsets.weight.zero_()  # start from one w per image (e4e)
    encoder.to(torch_device).train()
    opt = torch.optim.Adam(encoder.parameters(), lr=lr, betas=(0.9, 0.99))
    settings = {
        "generator": generator_spec or generator.name,
        "generator_fingerprint": generator_fingerprint(generator),
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "width": width,
        "latent_weight": latent_weight,
        "pixel_weight": pixel_weight,
        "feature_weight": feature_weight,
        "real_data": real_data is not None,
        "steps": steps,
    }
    if space != "z":  # only then, so that z checkpoints written before spaces existed still resume
        settings.update({"space": space, "offset_weight": offset_weight})
    start_step, history = 0, []
    if (ckpt_root / "state.json").is_file() and not has_checkpoint(ckpt_root):
        raise TlganError(
            f"{ckpt_root} holds an encoder checkpoint of an earlier tlgan version (state.json), which "
            f"this one cannot resume; delete the folder to start again, or use a new output folder"
        )
    if resume and has_checkpoint(ckpt_root):
        start_step, history = _resume(ckpt_root, encoder, opt, settings)
        log.info("resuming encoder training at step %d of %d", start_step, steps)
    elif resume:
        log.info("no checkpoint in %s; starting from step 0", ckpt_root)
    elif has_checkpoint(ckpt_root):
        raise TlganError(
            f"{ckpt_root} holds a checkpoint; pass resume=True (--resume) to continue it, or use a new "
            f"output folder"
        )
    real = None
    if real_data is not None:
        real = _real_sampler(real_data, generator.img_resolution, batch_size, seed, torch_device)

    t0 = time.perf_counter()
    bar = tqdm(
        range(start_step, steps),
        desc="training encoder",
        unit="step",
        disable=None if progress else True,
        initial=start_step,
        total=steps,
    )
    d = float(generator.z_dim)
    log_every = max(1, steps // 200)
    with frozen(generator, classifier):
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _learning_rate(step, steps, lr)
            z = generator.sample_latents_at(np.arange(step * batch_size, (step + 1) * batch_size), seed=seed)
            z = z.to(torch_device)
            with torch.no_grad():
                target = z if space == "z" else generator.map_latents(z, "z", space)
                x = generator.synthesize(target, space)
            images = x if real is None else torch.cat([x, real.batch(step)[0]])
            if space == "wp":
                w, offsets = encoder.parts(images)
                pred = encoder.compose(w, offsets)
                loss_latent = (pred[:batch_size] - target).pow(2).mean() / w_scale
                loss_offsets = offsets.pow(2).mean() / w_scale
                loss = latent_weight * loss_latent + offset_weight * loss_offsets
                record = {"step": step + 1, "latent": loss_latent.item(), "offsets": loss_offsets.item()}
            else:
                pred = encoder(images)
                loss_latent = (pred[:batch_size] - z).pow(2).sum(1).mean() / d
                loss = latent_weight * loss_latent
                record = {"step": step + 1, "latent": loss_latent.item()}
            if pixel_weight > 0 or feature_weight > 0:
                recon = generator.synthesize(pred, space)
                loss_pixel = (recon - images).pow(2).flatten(1).mean(1).mean()
                loss = loss + pixel_weight * loss_pixel
                record["pixel"] = loss_pixel.item()
                if feature_weight > 0:
                    loss_feature = feature_distance(classifier, recon, images).mean()
                    loss = loss + feature_weight * loss_feature
                    record["feature"] = loss_feature.item()
            if not math.isfinite(loss.item()):
                raise TlganError(
                    f"encoder training diverged at step {step + 1} (loss {loss.item()}); lower --lr"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % log_every == 0 or step + 1 == steps:
                history.append({k: round(v, 6) for k, v in record.items()})
                bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "step"})
            if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
                save_checkpoint(
                    ckpt_root,
                    step=step + 1,
                    modules={"encoder": encoder},
                    optimizers={"encoder": opt},
                    info={"settings": settings, "history": history},
                )
    bar.close()
    encoder.eval()
    seconds = time.perf_counter() - t0
    evaluation = evaluate_encoder(encoder, generator, n=64, seed=seed + 1000)
    summary = {
        "steps": steps,
        "resumed_from": start_step,
        "seconds": round(seconds, 2),
        "final": history[-1] if history else {},
        "eval": evaluation,
    }
    save_encoder(
        encoder,
        out_dir,
        generator=generator,
        generator_spec=generator_spec,
        extra={"training": {**settings, "summary": summary}},
    )
    write_json(
        out_dir / "encoder-training.json", {"settings": settings, "summary": summary, "history": history}
    )
    log.info("encoder saved to %s (fresh-face PSNR %.2f dB)", out_dir, evaluation["psnr_db_mean"])
    return summary


@torch.no_grad()
def _w_statistics(generator: Generator, seed: int, n: int = 1024) -> tuple[torch.Tensor, float]:
    """The centre of ``generator``'s w (its tracked ``w_avg`` when it has one, else the mean over ``n``
    samples of seed ``seed + 2000``) and the mean square of w - centre over those samples."""
    w = generator.sample_latents(n, seed=seed + 2000, space="w")
    tracked = getattr(generator, "w_avg", None)
    centre = (
        tracked.detach().float().cpu()
        if isinstance(tracked, torch.Tensor) and tracked.abs().sum() > 0
        else w.mean(dim=0)
    )
    return centre, max(float((w - centre).pow(2).mean()), 1e-8)


def _reset(seed: int):
    """Initialise weights from a generator seeded by ``seed`` (independent of global RNG use elsewhere)."""
    g = torch.Generator().manual_seed(seed)

    def init(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.zero_()

    return init


def _resume(
    root: Path, encoder: nn.Module, opt: torch.optim.Optimizer, settings: dict[str, Any]
) -> tuple[int, list[dict[str, float]]]:
    """Load the checkpoint under ``root`` into ``encoder`` and ``opt``; returns (step, loss history).

    Every setting but ``steps`` (a run may be extended) must equal the saved one."""
    manifest = restore_checkpoint(root, modules={"encoder": encoder}, optimizers={"encoder": opt})
    info = manifest.get("info", {})
    saved = {k: v for k, v in info.get("settings", {}).items() if k != "steps"}
    differ = settings_mismatch(saved, {k: v for k, v in settings.items() if k != "steps"})
    if differ:
        raise TlganError(
            f"{root}: cannot resume with different settings ({'; '.join(differ)}); use the same options "
            f"or start in a new --out folder"
        )
    return int(manifest["step"]), list(info.get("history", []))
