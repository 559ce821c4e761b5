"""Sampling on Ray: the overhead the Ray engine adds over the local engine on the same cores."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from tlgan.models import load_classifier, load_generator
from tlgan.sampling import LocalEngine, RayEngine, sample


def _same_shards(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("shard-*.safetensors"))
    return names == sorted(p.name for p in b.glob("shard-*.safetensors")) and all(
        (a / name).read_bytes() == (b / name).read_bytes() for name in names
    )


def bench_ray(
    generator: str = "toyfaces-gan",
    classifier: str = "toyfaces-classifier",
    n: int = 4096,
    shard_size: int = 256,
    batch_size: int = 128,
    workers: int = 2,
    device: str = "cpu",
    repeats: int = 2,
) -> dict:
    """Images per second of ``sample(engine=RayEngine(workers=W))`` against the local engine.

    On CPU each Ray worker reserves one CPU and runs torch on one thread, so W workers use W
    cores. The baseline is the local engine on the same W cores: one process, torch on W
    threads (``ray_vs_local_ratio``, 1.0 = Ray costs nothing; above 1 when W processes scale
    better than W intra-op threads). The local engine on one thread is timed too: W times its
    rate is what perfectly scaling workers would reach (``ray_vs_ideal_ratio``).
    On CUDA, W workers share the visible GPUs (``gpus_per_worker`` = GPUs / W) against the
    local engine on one GPU.

    Ray runs its workers at niceness 15 by default, so that its own daemons keep priority; on
    a machine shared with other jobs that would give the workers less CPU than the local
    baseline at niceness 0. The local Ray instance started here runs them at 0, as they
    effectively are on a dedicated cluster node.

    Start-up is timed apart and left out of the rates, since a long run pays it once:
    ``ray_init_seconds`` starts a local Ray instance (zero when this process is already
    connected), ``ray_worker_start_seconds`` is the best time from calling ``sample`` to
    every worker having loaded its models. Runs alternate ``repeats`` times and the best of
    each is kept, so a burst of load from elsewhere on a shared machine hurts neither side
    alone. ``ray_equals_local`` checks the two engines wrote the same shards, byte for byte.
    """
    from tlgan.sampling.ray_engine import connect, import_ray

    ray = import_ray()
    cuda = device.startswith("cuda")
    t0 = time.perf_counter()
    started = connect(
        num_cpus=workers,
        _system_config={"worker_niceness": 0},
        **({"num_gpus": torch.cuda.device_count()} if cuda else {}),
    )
    init_seconds = time.perf_counter() - t0
    G, F = load_generator(generator, device), load_classifier(classifier, device)
    settings = dict(
        seed=0,
        shard_size=shard_size,
        progress=False,
        generator_spec=generator,
        classifier_spec=classifier,
    )
    gpus_per_worker = min(1.0, torch.cuda.device_count() / workers) if cuda else 0.0

    def local(tmp: Path, threads: int) -> float:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            engine = LocalEngine(batch_size=batch_size, device=device)
            return sample(G, F, n, tmp / f"local-{threads}", engine=engine, **settings).manifest["seconds"]
        finally:
            torch.set_num_threads(before)

    def on_ray(tmp: Path) -> tuple:
        t = time.perf_counter()
        engine = RayEngine(
            batch_size=batch_size, device=device, workers=workers, gpus_per_worker=gpus_per_worker
        )
        run = sample(G, F, n, tmp / "ray", engine=engine, **settings)
        seconds = run.manifest["seconds"]
        return seconds, time.perf_counter() - t - seconds

    times: dict = {"local": [], "local1": [], "ray": [], "start": []}
    same = True
    try:
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                times["local"].append(local(tmp, 1 if cuda else workers))
                if not cuda:
                    times["local1"].append(local(tmp, 1))
                seconds, start = on_ray(tmp)
                times["ray"].append(seconds)
                times["start"].append(start)
                same = same and _same_shards(tmp / "ray", tmp / f"local-{1 if cuda else workers}")
    finally:
        if started:
            ray.shutdown()
    local_rate, ray_rate = n / min(times["local"]), n / min(times["ray"])
    result = {
        "ray_workers": workers,
        "ray_images_per_second": round(ray_rate, 1),
        "ray_local_images_per_second": round(local_rate, 1),
        "ray_vs_local_ratio": round(ray_rate / local_rate, 3),
        "ray_init_seconds": round(init_seconds, 2),
        "ray_worker_start_seconds": round(min(times["start"]), 2),
        "ray_equals_local": same,
        "ray_n": n,
    }
    if not cuda:
        one_thread = n / min(times["local1"])
        result["ray_local_1thread_images_per_second"] = round(one_thread, 1)
        result["ray_vs_ideal_ratio"] = round(ray_rate / (workers * one_thread), 3)
    else:
        result["ray_gpus_per_worker"] = gpus_per_worker
    return result
