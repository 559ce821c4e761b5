"""Sampling: draw latents, generate images, classify them, write a run folder."""
from __future__ import annotations

import logging
import os
import platform
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import tlgan
from tlgan.errors import TlganError
from tlgan.io import save_tensors
from tlgan.models.base import Classifier, Generator
from tlgan.sampling.run import FORMAT, MANIFEST, Run, shard_name, write_manifest

log = logging.getLogger(__name__)

DTYPES = ("fp32", "bf16")


def autocast_for(device: str, dtype: str):
    """A context that runs the forward passes in ``dtype`` ("fp32" or "bf16" autocast)."""
    if dtype not in DTYPES:
        raise TlganError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@torch.inference_mode()
def generate_and_score(generator: Generator, classifier: Classifier, latents: torch.Tensor, space: str = "z",
                       device: str = "cpu", dtype: str = "fp32", thumbnail: int = 0):
    """G then F on one batch. Returns (scores (N, A) float32 on CPU, thumbnails uint8 or None)."""
    with autocast_for(device, dtype):
        images = generator.synthesize(latents.to(device), space)
        scores = classifier.logits(images)
    thumbs = None
    if thumbnail:
        small = F.interpolate(images.float(), size=(thumbnail, thumbnail), mode="area")
        thumbs = ((small.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return scores.float().cpu(), thumbs


def sample(generator: Generator, classifier: Classifier, n: int, out: str | os.PathLike, *, seed: int = 0,
           batch_size: int = 256, shard_size: int = 4096, space: str = "z", device: str = "cpu",
           dtype: str = "fp32", thumbnails: int = 0, resume: bool = False, progress: bool = True,
           generator_spec: Optional[str] = None, classifier_spec: Optional[str] = None) -> Run:
    """Sample ``n`` faces into the run folder ``out`` and return it opened.

    Latent i is ``generator.sample_latents_at([i], seed, space)``, so the result depends only on
    (seed, n, models), not on ``batch_size`` or on where an interrupted run was resumed. In
    ``space="w"`` the run stores each sample's w (the mapping of its z, truncated when the
    generator is configured so); runs never store wp. The generator's load-time options
    (``generator.options``: truncation) are recorded in the manifest as ``generator_options``.
    ``thumbnails`` > 0 also stores each image downscaled to that size (uint8).
    """
    if n < 1:
        raise TlganError(f"-n must be at least 1 (got {n})")
    if batch_size < 1 or shard_size < 1:
        raise TlganError("batch size and shard size must be positive")
    generator.check_space(space)
    if space == "wp":
        raise TlganError("runs store z or w latents, not wp (wp is w repeated per layer); sample with --space w, "
                         "then edit chosen layers with --layers")
    out = Path(out)
    manifest = {
        "format": FORMAT,
        "generator": generator_spec or generator.name,
        "generator_options": dict(generator.options),
        "classifier": classifier_spec or classifier.name,
        "attributes": list(classifier.attributes),
        "space": space,
        "latent_dim": generator.latent_dim(space),
        "seed": int(seed),
        "n": int(n),
        "shard_size": int(shard_size),
        "thumbnails": int(thumbnails),
        "dtype": dtype,
        "versions": {"tlgan": tlgan.__version__, "torch": torch.__version__, "python": platform.python_version()},
        "complete": False,
    }
    identity = ("format", "generator", "generator_options", "classifier", "attributes", "space", "latent_dim", "seed", "n", "shard_size",
                "thumbnails", "dtype")
    if (out / MANIFEST).exists():
        existing = Run.open(out, require_complete=False).manifest
        if not resume:
            raise TlganError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")
        changed = [k for k in identity if existing.get(k, {} if k == "generator_options" else None) != manifest[k]]
        if changed:
            detail = "; ".join(f"{k}: run has {existing.get(k)!r}, asked {manifest[k]!r}" for k in changed)
            raise TlganError(f"cannot resume {out}: it was made with other settings ({detail})")
        manifest = existing
    elif out.exists() and any(out.iterdir()):
        raise TlganError(f"{out} exists and is not a run folder; choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, manifest)

    run = Run(out, manifest)
    done = set(run.done_shards())
    n_shards = -(-n // shard_size)
    todo = [k for k in range(n_shards) if k not in done]
    remaining = sum(min(shard_size, n - k * shard_size) for k in todo)
    start = time.perf_counter()
    with tqdm(total=n, initial=n - remaining, unit="img", desc="sampling", disable=not progress,
              dynamic_ncols=True) as bar:
        for k in todo:
            lo, hi = k * shard_size, min(n, (k + 1) * shard_size)
            indices = np.arange(lo, hi)
            latents = generator.sample_latents_at(indices, seed=seed, space=space)
            scores, thumbs = [], []
            for b in range(0, len(indices), batch_size):
                s, t = generate_and_score(generator, classifier, latents[b:b + batch_size], space, device, dtype,
                                          thumbnails)
                if not torch.isfinite(s).all():
                    raise TlganError(f"the classifier returned NaN or infinite scores for samples {lo + b}.."
                                     f"{lo + b + len(s) - 1}; check the classifier and the generator's output range")
                scores.append(s)
                if t is not None:
                    thumbs.append(t)
                bar.update(len(s))
            tensors = {"latents": latents, "scores": torch.cat(scores), "indices": torch.from_numpy(indices)}
            if thumbs:
                tensors["thumbnails"] = torch.cat(thumbs)
            save_tensors(out / shard_name(k), tensors, {"shard": k})
    manifest["complete"] = True
    manifest["seconds"] = round(time.perf_counter() - start, 3)
    write_manifest(out, manifest)
    log.info("sampled %d faces into %s", n, out)
    return Run(out, manifest)
