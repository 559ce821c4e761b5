"""One shard of a run: the unit of work both sampling engines hand out.

:func:`sample_shard` draws a shard's latents, runs the generator and the classifier on them
and writes the shard atomically; :class:`ShardSettings` is all a worker needs to know about
the run to do so. :class:`Engine` is what an engine (:class:`tlgan.sampling.LocalEngine`,
:class:`tlgan.sampling.RayEngine`) does with a list of pending shards.

The networks always see :data:`CHUNK` samples at a time, counted from the start of the shard
(the last chunk is padded with copies of the shard's last latent): their arithmetic depends on
the batch it runs in, so this keeps a sample's scores independent of the batch size, of the
engine and of where a run was resumed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tlgan.errors import TlganError
from tlgan.io import save_tensors
from tlgan.models.base import Classifier, Generator
from tlgan.sampling.run import Run, shard_name

DTYPES = ("fp32", "bf16")
# Samples per forward pass of the generator and classifier. As fast as batches of 256 on a CPU
# for the bundled networks (`tlgan bench --only sampling`), and a small padding cost for short shards.
CHUNK = 64
# What atomic_path leaves behind when the process writing a shard is killed mid-write.
STALE_SHARD_TMP = re.compile(r"^\.shard-\d{5}\.safetensors\..*\.tmp$")


def autocast_for(device: str, dtype: str):
    """A context that runs the forward passes in ``dtype`` ("fp32" or "bf16" autocast).

    Raises TlganError for another dtype.
    """
    if dtype not in DTYPES:
        raise TlganError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def stores_embeddings(classifier: Classifier) -> bool:
    """Whether a run sampled with ``classifier`` also stores image embeddings: classifiers whose
    logits are a product of a stored embedding and text directions (CLIP) do, so that later
    attributes score the run without generating it again."""
    return callable(getattr(classifier, "embed_images", None)) and callable(
        getattr(classifier, "logits_from_embeddings", None)
    )


@torch.inference_mode()
def generate_and_embed(
    generator: Generator,
    classifier: Classifier,
    latents: torch.Tensor,
    space: str = "z",
    device: str = "cpu",
    dtype: str = "fp32",
    thumbnail: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """:func:`generate_and_score`, plus the normalised image embeddings (N, E) float16 on CPU when
    the classifier :func:`stores_embeddings` (else None); the scores are computed from the
    float32 embeddings, exactly as ``classifier.logits`` would."""
    embeddings = None
    with autocast_for(device, dtype):
        images = generator.synthesize(latents.to(device), space)
        if stores_embeddings(classifier):
            embedded = classifier.embed_images(images)
            scores = classifier.logits_from_embeddings(embedded)
            embeddings = embedded.float().cpu().to(torch.float16)
        else:
            scores = classifier.logits(images)
    thumbs = None
    if thumbnail:
        small = F.interpolate(images.float(), size=(thumbnail, thumbnail), mode="area")
        thumbs = ((small.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
    return scores.float().cpu(), thumbs, embeddings


def generate_and_score(
    generator: Generator,
    classifier: Classifier,
    latents: torch.Tensor,
    space: str = "z",
    device: str = "cpu",
    dtype: str = "fp32",
    thumbnail: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """G then F on one batch of ``latents`` in ``space`` ((N, D), or (N, num_ws, w_dim) for wp).

    Returns (scores (N, A) float32 logits on CPU, thumbnails (N, 3, t, t) uint8 on CPU or None),
    ``t`` = ``thumbnail`` (0: none). The scores depend on N (the networks' arithmetic does);
    :func:`sample_shard` therefore always passes :data:`CHUNK` latents.
    """
    scores, thumbs, _ = generate_and_embed(generator, classifier, latents, space, device, dtype, thumbnail)
    return scores, thumbs


@dataclass(frozen=True)
class ShardSettings:
    """Everything a worker needs to compute any shard of a run (small and picklable).

    The content fields come from the manifest; ``batch_size`` (samples per progress report)
    and ``device`` only say how.
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

    def bounds(self, k: int) -> tuple[int, int]:
        """Sample indices [lo, hi) of shard k."""
        return k * self.shard_size, min(self.n, (k + 1) * self.shard_size)

    def count(self, k: int) -> int:
        lo, hi = self.bounds(k)
        return hi - lo


def _chunks(latents: torch.Tensor):
    """(start, chunk of exactly CHUNK latents, count of real ones): the last chunk is padded by
    repeating the last latent."""
    for b in range(0, len(latents), CHUNK):
        part = latents[b : b + CHUNK]
        real = len(part)
        if real < CHUNK:
            part = torch.cat([part, part[-1:].expand(CHUNK - real, *part.shape[1:])])
        yield b, part, real


def sample_shard(
    generator: Generator,
    classifier: Classifier,
    out: str | os.PathLike,
    k: int,
    settings: ShardSettings,
    on_batch: Callable[[int], Any] | None = None,
) -> int:
    """Compute shard ``k`` of the run in ``out`` and save it atomically; returns its sample count.

    Writes ``latents`` (S, D) float32 in ``settings.space``, ``scores`` (S, A) float32 logits,
    ``indices`` (S,) int64, when ``settings.thumbnails`` > 0 ``thumbnails`` (S, 3, t, t)
    uint8, and for a classifier that :func:`stores_embeddings` (CLIP) ``embeddings`` (S, E)
    float16, each row the normalised image embedding. ``on_batch(count)`` is called as the samples are done, about every
    ``settings.batch_size`` of them (progress). The networks see :data:`CHUNK` samples at a time
    whatever the batch size, so recomputing a shard, with any batch size, on any engine, gives
    the same bytes. Raises TlganError when the classifier answers NaN or infinity.
    """
    lo, hi = settings.bounds(k)
    indices = np.arange(lo, hi)
    latents = generator.sample_latents_at(indices, seed=settings.seed, space=settings.space)
    scores, thumbs, embeddings, unreported = [], [], [], 0
    for b, chunk, real in _chunks(latents):
        s, t, e = generate_and_embed(
            generator, classifier, chunk, settings.space, settings.device, settings.dtype, settings.thumbnails
        )
        s = s[:real]
        if not torch.isfinite(s).all():
            raise TlganError(
                f"the classifier returned NaN or infinite scores for samples {lo + b}.."
                f"{lo + b + real - 1}; check the classifier and the generator's output range"
            )
        scores.append(s)
        if t is not None:
            thumbs.append(t[:real])
        if e is not None:
            embeddings.append(e[:real])
        unreported += real
        if on_batch is not None and (unreported >= settings.batch_size or b + real == len(latents)):
            on_batch(unreported)
            unreported = 0
    tensors = {"latents": latents, "scores": torch.cat(scores), "indices": torch.from_numpy(indices)}
    if thumbs:
        tensors["thumbnails"] = torch.cat(thumbs)
    if embeddings:
        tensors["embeddings"] = torch.cat(embeddings)
    save_tensors(Path(out) / shard_name(k), tensors, {"shard": k})
    return hi - lo


@dataclass(frozen=True, kw_only=True)
class Engine:
    """How a run's shards are computed; what the run holds does not depend on it.

    ``batch_size``: samples between progress reports (the networks always run on
    :data:`CHUNK` samples); ``device``: the torch device the networks run on. Subclasses
    implement :meth:`sample_shards`; ``name`` is recorded in the run's manifest.
    """

    batch_size: int = 256
    device: str = "cpu"

    name = "engine"

    def check(self, generator_spec: str | None, classifier_spec: str | None) -> None:
        """Refuse settings that cannot work, before anything is written (TlganError)."""
        if self.batch_size < 1:
            raise TlganError(f"batch size must be positive (got {self.batch_size})")

    def session(self) -> AbstractContextManager:
        """A context inside which :meth:`sample_shards` can run (e.g. connected to a cluster)."""
        return nullcontext()

    def sample_shards(
        self,
        generator: Generator,
        classifier: Classifier,
        run: Run,
        todo: list[int],
        settings: ShardSettings,
        bar: Any,
    ) -> float:
        """Compute and write the shards ``todo`` of ``run``, updating the tqdm ``bar``; returns
        the seconds spent sampling."""
        raise NotImplementedError
