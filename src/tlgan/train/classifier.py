"""Training the attribute classifier on a CelebA-layout folder.

Multi-label binary cross-entropy on logits, each attribute's positives weighted by
(negatives / positives) in the training split so that rare attributes count as much as
common ones; AdamW with a warm-up and cosine learning-rate schedule. The result is judged
by per-attribute balanced accuracy, the mean of the true-positive and true-negative rates,
on the test split.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tlgan.data.celeba import CelebAFolder
from tlgan.data.images import BatchSampler, to_float_images
from tlgan.errors import TlganError
from tlgan.io import write_json
from tlgan.models.base import Classifier
from tlgan.models.networks import AttributeClassifierNet, save_pretrained
from tlgan.train.checkpoint import has_checkpoint, restore_checkpoint, save_checkpoint
from tlgan.train.common import (
    CHANNELS_LAST,
    command_line,
    cosine_lr,
    resolve_device,
    set_lr,
    settings_mismatch,
)

log = logging.getLogger(__name__)

MAX_POS_WEIGHT = 100.0


def positive_weights(labels: torch.Tensor, attributes=None) -> torch.Tensor:
    """pos_weight (A,) = negatives / positives per attribute, clamped to [1/100, 100].

    Weighting the positive term of the BCE by this ratio makes both classes count equally,
    which is what balanced accuracy measures. An attribute with no positives (or no
    negatives) in ``labels`` (N, A) cannot be learned; it is logged and clamped.
    """
    pos = labels.sum(dim=0)
    neg = labels.shape[0] - pos
    for a in range(labels.shape[1]):
        if pos[a] == 0 or neg[a] == 0:
            name = attributes[a] if attributes is not None else a
            log.warning(
                "attribute %s is %s in every training image; the classifier cannot learn it",
                name,
                "absent" if pos[a] == 0 else "present",
            )
    return (neg / pos.clamp(min=1)).clamp(1.0 / MAX_POS_WEIGHT, MAX_POS_WEIGHT)


@torch.no_grad()
def evaluate_classifier(
    model: Classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, float]]:
    """Per-attribute metrics of ``model`` on uint8 ``images`` (N, 3, R, R) with 0/1 ``labels`` (N, A).

    Returns {attribute: {"balanced_accuracy", "accuracy", "true_positive_rate",
    "true_negative_rate", "positives"}} with a prediction "present" when the logit is > 0.
    When the data has no positives (or no negatives) for an attribute, its balanced
    accuracy is the one rate that exists.
    """
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, len(images), batch_size):
        batch = to_float_images(images[start : start + batch_size].to(device))
        preds.append((model.logits(batch) > 0).cpu())
    model.train(was_training)
    pred = torch.cat(preds).bool()
    truth = labels.bool().cpu()
    out = {}
    for a, name in enumerate(model.attributes):
        p, t = pred[:, a], truth[:, a]
        n_pos, n_neg = int(t.sum()), int((~t).sum())
        tpr = float((p & t).sum()) / n_pos if n_pos else float("nan")
        tnr = float((~p & ~t).sum()) / n_neg if n_neg else float("nan")
        rates = [r for r in (tpr, tnr) if r == r]
        out[name] = {
            "balanced_accuracy": sum(rates) / len(rates),
            "accuracy": float((p == t).float().mean()),
            "true_positive_rate": tpr if n_pos else None,
            "true_negative_rate": tnr if n_neg else None,
            "positives": n_pos,
        }
    return out


def train_classifier(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    steps: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 1e-2,
    width: int = 32,
    resolution: int = 64,
    device: str = "cpu",
    seed: int = 0,
    resume: bool = False,
    checkpoint_every: int = 500,
    name: str = "attribute-classifier",
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Train an :class:`AttributeClassifierNet` on ``data_dir`` (CelebA layout); save it to ``out_dir``.

    Trains for ``steps`` batches of ``batch_size`` images from the train split, saves a
    checkpoint to ``OUT/checkpoint/`` every ``checkpoint_every`` steps and at the end, then
    measures balanced accuracy on the test split and saves the network with
    :func:`save_pretrained` (``OUT/model.json`` + ``OUT/model.safetensors``; the JSON has
    the attribute names, the test metrics and the training settings) and ``OUT/metrics.json``.
    ``resume`` continues from the checkpoint; with the same settings the result equals an
    uninterrupted run. ``on_step(step, {"loss": ...})`` is called after every step.

    Returns {"out_dir", "steps", "final_loss", "seconds_per_step" (optimisation only, without
    checkpoints), "test_mean_balanced_accuracy",
    "test_balanced_accuracy": {attribute: value}, "test_metrics": {...}}.
    """
    dev = resolve_device(device)
    out_dir = Path(out_dir)
    if steps < 1:
        raise TlganError(f"steps must be at least 1, not {steps}")
    if checkpoint_every < 1:
        raise TlganError(f"checkpoint_every must be at least 1, not {checkpoint_every}")
    if not resume and has_checkpoint(out_dir):
        raise TlganError(
            f"{out_dir} already holds a training checkpoint; pass --resume to continue it, "
            f"or choose another --out folder"
        )
    train = CelebAFolder(data_dir, "train", resolution, progress=progress)
    test = CelebAFolder(data_dir, "test", resolution, progress=progress)
    attributes = list(train.attributes)
    log.info("training on %d images (%d attributes), testing on %d", len(train), len(attributes), len(test))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AttributeClassifierNet(attributes, resolution=resolution, width=width)
    model.name = name
    # Channels-last convolutions train about 3x faster on CPU (oneDNN); saved weights are plain.
    model.to(dev, memory_format=CHANNELS_LAST).train()
    pos_weight = positive_weights(train.labels, attributes).to(dev)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]  # BatchNorm scales and biases
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )
    warmup = min(200, steps // 20)
    settings = {
        "data_dir": str(Path(data_dir).resolve()),
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "width": width,
        "resolution": resolution,
        "seed": seed,
    }

    start, loss_avg = 0, None
    if resume and has_checkpoint(out_dir):
        manifest = restore_checkpoint(out_dir, modules={"model": model}, optimizers={"model": optimizer})
        info = manifest["info"]
        diff = settings_mismatch(info.get("settings", {}), settings)
        if diff:
            raise TlganError(
                f"{out_dir}: cannot resume with other settings ({'; '.join(diff)}); pass the same ones"
            )
        if info.get("steps") != steps:
            log.warning(
                "resuming a run planned for %s steps with steps=%d: the learning-rate schedule changes",
                info.get("steps"),
                steps,
            )
        start, loss_avg = int(manifest["step"]), info.get("loss_avg")
        log.info("resumed from step %d", start)
    elif resume:
        log.warning("%s holds no checkpoint; starting from step 0", out_dir)

    def checkpoint(step):
        save_checkpoint(
            out_dir,
            step=step,
            modules={"model": model},
            optimizers={"model": optimizer},
            info={"settings": settings, "steps": steps, "loss_avg": loss_avg, "kind": "classifier"},
        )

    sampler = BatchSampler(
        train.images, train.labels, batch_size=batch_size, seed=seed, flip=False, device=dev
    )
    bar = tqdm(total=steps, initial=start, desc="classifier", unit="step", disable=None if progress else True)
    seconds, ran = 0.0, 0
    for step in range(start, steps):
        t0 = time.perf_counter()
        set_lr(optimizer, cosine_lr(step, steps, lr, warmup))
        images, labels = sampler.batch(step)
        images = images.contiguous(memory_format=CHANNELS_LAST)
        logits = model.logits(images)
        loss = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        if value != value:
            raise TlganError(f"the loss became NaN at step {step + 1}; lower --lr (now {lr})")
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        seconds += time.perf_counter() - t0
        ran += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.4f}")
        if (step + 1) % checkpoint_every == 0 and step + 1 < steps:
            checkpoint(step + 1)
        if on_step is not None:
            on_step(step + 1, {"loss": value})
    bar.close()
    checkpoint(steps)

    model.eval()
    metrics = evaluate_classifier(model, test.images, test.labels, device=dev)
    balanced = {a: m["balanced_accuracy"] for a, m in metrics.items()}
    mean_balanced = sum(balanced.values()) / len(balanced)
    result = {
        "out_dir": str(out_dir),
        "steps": steps,
        "final_loss": loss_avg,
        "seconds_per_step": seconds / ran if ran else None,
        "test_images": len(test),
        "test_mean_balanced_accuracy": mean_balanced,
        "test_balanced_accuracy": balanced,
        "test_metrics": metrics,
    }
    training = {
        **settings,
        "steps": steps,
        "checkpoint_every": checkpoint_every,
        "device": str(dev),
        "train_images": len(train),
        "command": command if command is not None else command_line(),
    }
    save_pretrained(
        model.cpu(),
        out_dir,
        extra={
            "training": training,
            "metrics": {"test_mean_balanced_accuracy": mean_balanced, "test": metrics},
        },
    )
    write_json(out_dir / "metrics.json", result)
    log.info("test mean balanced accuracy %.4f; saved to %s", mean_balanced, out_dir)
    return result
