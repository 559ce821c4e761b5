"""Sampling throughput: the whole `sample` path against a bare G-then-F loop on the same batches."""

from __future__ import annotations

import statistics
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
    machine hurts neither side alone. Each side's CPU time (this process's, all its threads) is
    kept as well: on a machine shared with other jobs, wall time also counts the waits for a core,
    and ``sample_vs_bare_cpu_ratio`` compares the work itself.
    """
    G = load_generator(generator, device) if isinstance(generator, str) else generator
    F = load_classifier(classifier, device) if isinstance(classifier, str) else classifier
    latents = G.sample_latents(n, seed=0)

    def bare() -> None:
        with torch.inference_mode():
            for i in range(0, n, batch_size):
                F.logits(G.synthesize(latents[i : i + batch_size].to(device))).cpu()
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def full() -> None:
        with tempfile.TemporaryDirectory() as tmp:
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

    def timed(run) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        return time.perf_counter() - wall, time.process_time() - cpu

    bare()  # warm-up: first calls pay for allocations and kernel selection
    bare_times, full_times = [], []
    for k in range(repeats):
        # each pair runs back to back, in alternating order, so a pair sees one level of load
        if k % 2 == 0:
            bare_times.append(timed(bare))
            full_times.append(timed(full))
        else:
            full_times.append(timed(full))
            bare_times.append(timed(bare))
    best_bare, best_full = min(t[0] for t in bare_times), min(t[0] for t in full_times)
    cpu_bare, cpu_full = min(t[1] for t in bare_times), min(t[1] for t in full_times)
    paired = sorted(b[0] / f[0] for b, f in zip(bare_times, full_times, strict=True))
    return {
        "sample_images_per_second": round(n / best_full, 1),
        "bare_images_per_second": round(n / best_bare, 1),
        "sample_vs_bare_ratio": round(best_bare / best_full, 3),
        "sample_vs_bare_cpu_ratio": round(cpu_bare / cpu_full, 3),
        "sample_vs_bare_paired_median_ratio": round(float(statistics.median(paired)), 3),
        "repeats": repeats,
    }
