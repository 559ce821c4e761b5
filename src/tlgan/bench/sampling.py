"""Sampling throughput: the whole `sample` path against a bare G-then-F loop on the same batches."""

from __future__ import annotations

import tempfile
import time

import torch

from tlgan.models import load_classifier, load_generator
from tlgan.sampling import LocalEngine, sample


def bench_sampling(
    generator="toyfaces-gan",
    classifier="toyfaces-classifier",
    n: int = 4096,
    batch_size: int = 256,
    device: str = "cpu",
    repeats: int = 3,
    space: str = "z",
) -> dict:
    """Images per second of ``sample`` and of a bare loop; their ratio (1.0 = no overhead).

    ``generator`` / ``classifier`` are specs or models. The bare loop runs G on z then F, batch
    by batch; ``sample`` draws each sample's latent in ``space`` (for w: z, then the mapping
    network), generates, classifies and writes shards. The two are interleaved ``repeats``
    times and the best time of each is kept, so a burst of load from elsewhere on a shared
    machine hurts neither side alone.
    """
    G = load_generator(generator, device) if isinstance(generator, str) else generator
    F = load_classifier(classifier, device) if isinstance(classifier, str) else classifier
    latents = G.sample_latents(n, seed=0)

    def bare() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, n, batch_size):
                F.logits(G.synthesize(latents[i : i + batch_size].to(device))).cpu()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def full() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            sample(
                G,
                F,
                n,
                f"{tmp}/run",
                shard_size=n,
                space=space,
                engine=LocalEngine(batch_size=batch_size, device=device),
                progress=False,
            )
            return time.perf_counter() - t0

    bare()  # warm-up: first calls pay for allocations and kernel selection
    bare_times, full_times = [], []
    for _ in range(repeats):
        bare_times.append(bare())
        full_times.append(full())
    best_bare, best_full = min(bare_times), min(full_times)
    return {
        "sample_images_per_second": round(n / best_full, 1),
        "bare_images_per_second": round(n / best_bare, 1),
        "sample_vs_bare_ratio": round(best_bare / best_full, 3),
    }
