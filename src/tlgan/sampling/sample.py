"""Sampling: draw latents, generate images, classify them, write a run folder.

The work is split the same way whatever runs it: :func:`start_run` writes (or checks) the
manifest, an engine computes the pending shards with :func:`tlgan.sampling.shard.sample_shard`
(:class:`~tlgan.sampling.local_engine.LocalEngine` in this process,
:class:`~tlgan.sampling.ray_engine.RayEngine` on a Ray cluster), :func:`finish_run` marks the
run complete.
"""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

import tlgan
from tlgan.errors import TlganError
from tlgan.models.base import Classifier, Generator
from tlgan.sampling.local_engine import LocalEngine
from tlgan.sampling.run import FORMAT, MANIFEST, Run, write_manifest
from tlgan.sampling.shard import STALE_SHARD_TMP, Engine, ShardSettings, stores_embeddings

log = logging.getLogger(__name__)

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
    "prompts",
    "embeddings",
)


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
    """The manifest of a new run (``complete`` False); ``engine`` is the one writing it now.

    A CLIP classifier's prompts are recorded (``prompts``: what rebuilds it, on a Ray worker or
    to score the run again), and ``embeddings`` ({"dim": E, "dtype": "float16"}) says the shards
    hold each image's embedding; both are None for other classifiers.
    """
    prompts = getattr(classifier, "prompts", None)
    embeds = stores_embeddings(classifier)
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
        "prompts": {a: p.to_json() for a, p in prompts.items()} if isinstance(prompts, dict) else None,
        "embeddings": {"dim": int(classifier.embedding_dim), "dtype": "float16"} if embeds else None,
        "versions": {
            "tlgan": tlgan.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "engine": engine,
        "complete": False,
    }


def start_run(out: str | os.PathLike, manifest: dict[str, Any], resume: bool = False) -> Run:
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
    shard_size: int = 4096,
    space: str = "z",
    dtype: str = "fp32",
    thumbnails: int = 0,
    resume: bool = False,
    progress: bool = True,
    generator_spec: str | None = None,
    classifier_spec: str | None = None,
    engine: Engine | None = None,
) -> Run:
    """Sample ``n`` faces into the run folder ``out`` and return it opened.

    What the run holds: latents of samples 0..n-1 in ``space`` ("z", or "w" for generators that
    have it; never "wp"), (n, D) float32, with latent i = ``generator.sample_latents_at([i], seed,
    space)``; the classifier's logits (n, A) float32; with ``thumbnails`` > 0 each image
    downscaled to that size (uint8); in shards of ``shard_size``, computed in ``dtype`` ("fp32",
    or "bf16" autocast). In ``space="w"`` a sample's w is the mapping of its z, truncated when
    the generator is configured so; the generator's load-time options (``generator.options``)
    are recorded in the manifest. ``generator_spec`` / ``classifier_spec`` are recorded instead
    of the models' names (and are what Ray workers load).

    How it is computed is the ``engine``'s business: :class:`~tlgan.sampling.LocalEngine` (the
    default: ``batch_size``, ``device``, ``threads``) or :class:`~tlgan.sampling.RayEngine`
    (``address``, ``workers``, ``gpus_per_worker``, ``max_retries``). The bytes written depend
    only on (seed, n, shard_size, space, dtype, models), not on the engine, its batch size, or
    where an interrupted run was resumed (``resume=True`` continues the run in ``out``).

    Raises TlganError for n < 1, a space the generator lacks or "wp", an engine that cannot
    run (e.g. Ray not installed), a non-empty ``out`` that is not a run, resuming with other
    content settings, or non-finite scores.
    """
    engine = LocalEngine() if engine is None else engine
    if n < 1:
        raise TlganError(f"-n must be at least 1 (got {n})")
    if shard_size < 1:
        raise TlganError(f"shard size must be positive (got {shard_size})")
    if not isinstance(engine, Engine):
        raise TlganError(
            f"engine must be a tlgan.LocalEngine or tlgan.RayEngine, not {type(engine).__name__}"
        )
    engine.check(generator_spec, classifier_spec)
    generator.check_space(space)
    if space == "wp":
        raise TlganError(
            "runs store z or w latents, not wp (wp is w repeated per layer); sample with --space w, "
            "then edit chosen layers with --layers"
        )
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
        engine=engine.name,
    )
    with engine.session():  # before the folder is touched: a cluster that is not there writes nothing
        run = start_run(out, manifest, resume)
        settings = ShardSettings.from_manifest(run.manifest, engine.batch_size, engine.device)
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
            seconds = engine.sample_shards(generator, classifier, run, todo, settings, bar)
    run = finish_run(run, seconds)
    log.info("sampled %d faces into %s", n, out)
    return run
