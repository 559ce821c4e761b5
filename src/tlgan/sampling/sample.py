"""Sampling: draw latents, generate images, classify them, write a run folder.

The work is split the same way whatever runs it: :func:`open_run` writes (or checks) the
manifest, :func:`sample_shard` computes one shard and saves it atomically, :func:`finish_run`
marks the run complete. The local engine calls :func:`sample_shard` in a loop; the Ray engine
(:mod:`tlgan.sampling.ray_engine`) calls the same function inside each worker.
"""

from __future__ import annotations

import logging
import os
import platform
import re
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
ENGINES = ("local", "ray")
# Manifest fields that define a run's content: resuming with any of them changed is refused.
# The engine is not one of them: both engines write the same bytes.
IDENTITY = (
    "format",
    "generator",
    "generator_options",
    "classifier",
    "attributes",
    "space",
    "latent_dim",
    "seed",
    "n",
    "shard_size",
    "thumbnails",
    "dtype",
)
# What atomic_path leaves behind when the process writing a shard is killed mid-write.
STALE_SHARD_TMP = re.compile(r"^\.shard-\d{5}\.safetensors\..*\.tmp$")


def autocast_for(device: str, dtype: str):
    """A context that runs the forward passes in ``dtype`` ("fp32" or "bf16" autocast)."""
    if dtype not in DTYPES:
        raise TlganError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@torch.inference_mode()
def generate_and_score(
    generator: Generator,
    classifier: Classifier,
    latents: torch.Tensor,
    space: str = "z",
    device: str = "cpu",
    dtype: str = "fp32",
    thumbnail: int = 0,
):
    """G then F on one batch. Returns (scores (N, A) float32 on CPU, thumbnails uint8 or None)."""
    with autocast_for(device, dtype):
        images = generator.synthesize(latents.to(device), space)
        scores = classifier.logits(images)
    thumbs = None
    if thumbnail:
        small = F.interpolate(images.float(), size=(thumbnail, thumbnail), mode="area")
        thumbs = ((small.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return scores.float().cpu(), thumbs


@dataclass(frozen=True)
class ShardSettings:
    """Everything a worker needs to compute any shard of a run (small and picklable).

    The content fields come from the manifest; ``batch_size`` and ``device`` only say how.
    """

    n: int
    shard_size: int
    seed: int
    space: str
    dtype: str
    thumbnails: int
    batch_size: int
    device: str

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], batch_size: int, device: str) -> ShardSettings:
        return cls(
            n=int(manifest["n"]),
            shard_size=int(manifest["shard_size"]),
            seed=int(manifest["seed"]),
            space=manifest.get("space", "z"),
            dtype=manifest["dtype"],
            thumbnails=int(manifest["thumbnails"]),
            batch_size=int(batch_size),
            device=device,
        )

    def bounds(self, k: int) -> tuple:
        """Sample indices [lo, hi) of shard k."""
        return k * self.shard_size, min(self.n, (k + 1) * self.shard_size)

    def count(self, k: int) -> int:
        lo, hi = self.bounds(k)
        return hi - lo


def sample_shard(
    generator: Generator,
    classifier: Classifier,
    out: str | os.PathLike,
    k: int,
    settings: ShardSettings,
    on_batch: Callable[[int], Any] | None = None,
) -> int:
    """Compute shard ``k`` of the run in ``out`` and save it atomically; returns its sample count.

    Writes ``latents`` (S, D) float32, ``scores`` (S, A) float32, ``indices`` (S,) int64 and,
    when ``settings.thumbnails`` > 0, ``thumbnails`` (S, 3, t, t) uint8. ``on_batch(count)`` is
    called after each batch (progress). Recomputing a shard replaces it with the same bytes.
    """
    lo, hi = settings.bounds(k)
    indices = np.arange(lo, hi)
    latents = generator.sample_latents_at(indices, seed=settings.seed, space=settings.space)
    scores, thumbs = [], []
    for b in range(0, len(indices), settings.batch_size):
        s, t = generate_and_score(
            generator,
            classifier,
            latents[b : b + settings.batch_size],
            settings.space,
            settings.device,
            settings.dtype,
            settings.thumbnails,
        )
        if not torch.isfinite(s).all():
            raise TlganError(
                f"the classifier returned NaN or infinite scores for samples {lo + b}.."
                f"{lo + b + len(s) - 1}; check the classifier and the generator's output range"
            )
        scores.append(s)
        if t is not None:
            thumbs.append(t)
        if on_batch is not None:
            on_batch(len(s))
    tensors = {"latents": latents, "scores": torch.cat(scores), "indices": torch.from_numpy(indices)}
    if thumbs:
        tensors["thumbnails"] = torch.cat(thumbs)
    save_tensors(Path(out) / shard_name(k), tensors, {"shard": k})
    return hi - lo


def run_manifest(
    generator: Generator,
    classifier: Classifier,
    n: int,
    *,
    seed: int,
    shard_size: int,
    space: str,
    dtype: str,
    thumbnails: int,
    generator_spec: str | None = None,
    classifier_spec: str | None = None,
    engine: str = "local",
) -> dict[str, Any]:
    """The manifest of a new run (``complete`` False); ``engine`` is the one writing it now."""
    return {
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
        "versions": {
            "tlgan": tlgan.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "engine": engine,
        "complete": False,
    }


def open_run(out: str | os.PathLike, manifest: dict[str, Any], resume: bool = False) -> Run:
    """Create the run folder ``out`` with ``manifest``, or reopen it for ``resume``.

    A resumed run keeps its manifest (only the engine is updated); resuming with settings
    that change the run's content is refused, naming each difference.
    """
    out = Path(out)
    if (out / MANIFEST).exists():
        existing = Run.open(out, require_complete=False).manifest
        if not resume:
            raise TlganError(
                f"{out} already holds a run; pass --resume to continue it, or choose another --out"
            )
        changed = [
            k for k in IDENTITY if existing.get(k, {} if k == "generator_options" else None) != manifest[k]
        ]
        if changed:
            detail = "; ".join(f"{k}: run has {existing.get(k)!r}, asked {manifest[k]!r}" for k in changed)
            raise TlganError(f"cannot resume {out}: it was made with other settings ({detail})")
        manifest = {**existing, "engine": manifest.get("engine", "local")}
    elif out.exists() and any(out.iterdir()):
        raise TlganError(f"{out} exists and is not a run folder; choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(out, manifest)
    return Run(out, manifest)


def pending_shards(run: Run) -> list[int]:
    """Shards of ``run`` not yet on disk, in order."""
    done = set(run.done_shards())
    return [k for k in range(-(-run.n // run.manifest["shard_size"])) if k not in done]


def finish_run(run: Run, seconds: float) -> Run:
    """Mark ``run`` complete. Only called once every shard is on disk, so no writer is left: the
    temporary files of writers that were killed mid-shard are removed here."""
    for path in run.path.iterdir():
        if STALE_SHARD_TMP.match(path.name):
            log.info("removing %s, left by a writer killed mid-shard", path.name)
            path.unlink(missing_ok=True)
    manifest = {**run.manifest, "complete": True, "seconds": round(seconds, 3)}
    write_manifest(run.path, manifest)
    return Run(run.path, manifest)


def sample(
    generator: Generator,
    classifier: Classifier,
    n: int,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    batch_size: int = 256,
    shard_size: int = 4096,
    space: str = "z",
    device: str = "cpu",
    dtype: str = "fp32",
    thumbnails: int = 0,
    resume: bool = False,
    progress: bool = True,
    generator_spec: str | None = None,
    classifier_spec: str | None = None,
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    max_retries: int = 3,
) -> Run:
    """Sample ``n`` faces into the run folder ``out`` and return it opened.

    Latent i is ``generator.sample_latents_at([i], seed, space)``, so the result depends only on
    (seed, n, models), not on ``batch_size``, on where an interrupted run was resumed, or on
    the engine. In ``space="w"`` the run stores each sample's w (the mapping of its z, truncated
    when the generator is configured so); runs never store wp. The generator's load-time options
    (``generator.options``: truncation) are recorded in the manifest as ``generator_options``.
    ``thumbnails`` > 0 also stores each image downscaled to that size (uint8).

    ``engine="ray"`` computes the shards on a Ray cluster (see :mod:`tlgan.sampling.ray_engine`):
    ``workers`` actors (default: as many as the cluster's CPUs, or GPUs / ``gpus_per_worker``)
    each load the models from ``generator_spec`` and ``classifier_spec``; ``address`` is passed
    to ``ray.init`` ("auto", "ray://HOST:PORT"; None starts a local instance unless one is
    running); a worker that dies is restarted and its shard retried up to ``max_retries`` times.
    ``out`` must then be a folder every worker can reach. ``generator``/``classifier`` are used
    on the driver only for the manifest.
    """
    if n < 1:
        raise TlganError(f"-n must be at least 1 (got {n})")
    if batch_size < 1 or shard_size < 1:
        raise TlganError("batch size and shard size must be positive")
    if engine not in ENGINES:
        raise TlganError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    generator.check_space(space)
    if space == "wp":
        raise TlganError(
            "runs store z or w latents, not wp (wp is w repeated per layer); sample with --space w, "
            "then edit chosen layers with --layers"
        )
    connected = nullcontext()
    if engine == "ray":
        from tlgan.sampling.ray_engine import check_ray_request, session

        check_ray_request(generator_spec, classifier_spec, device, workers, gpus_per_worker, max_retries)
        connected = session(
            address
        )  # before the folder is touched: a cluster that is not there writes nothing
    manifest = run_manifest(
        generator,
        classifier,
        n,
        seed=seed,
        shard_size=shard_size,
        space=space,
        dtype=dtype,
        thumbnails=thumbnails,
        generator_spec=generator_spec,
        classifier_spec=classifier_spec,
        engine=engine,
    )
    with connected:
        run = open_run(out, manifest, resume)
        settings = ShardSettings.from_manifest(run.manifest, batch_size, device)
        todo = pending_shards(run)
        remaining = sum(settings.count(k) for k in todo)
        with tqdm(
            total=n,
            initial=n - remaining,
            unit="img",
            desc="sampling",
            disable=not progress,
            dynamic_ncols=True,
        ) as bar:
            if engine == "local":
                start = time.perf_counter()
                for k in todo:
                    sample_shard(generator, classifier, run.path, k, settings, on_batch=bar.update)
                seconds = time.perf_counter() - start
            else:
                from tlgan.sampling.ray_engine import sample_shards_on_ray

                seconds = sample_shards_on_ray(
                    run,
                    todo,
                    settings,
                    bar,
                    workers=workers,
                    gpus_per_worker=gpus_per_worker,
                    max_retries=max_retries,
                )
    run = finish_run(run, seconds)
    log.info("sampled %d faces into %s", n, out)
    return run
