"""`tlgan bench`: every benchmark section, each reporting ratios against a baseline from the same run."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Sequence

import torch

log = logging.getLogger(__name__)

SECTIONS = (
    "sampling",
    "fit",
    "unsupervised",
    "toyfaces",
    "studio",
    "studio-load",
    "stylegan2",
    "stylegan3",
    "ray",
    "inversion",
    "align",
    "clip",
)


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_bench(device: str = "cpu", quick: bool = False, only: Sequence[str] | None = None) -> dict:
    from tlgan.errors import TlganError

    sections = list(only) if only else list(SECTIONS)
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise TlganError(f"unknown bench section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    result: dict = {"device": device, "quick": quick, "machine": machine()}
    if "sampling" in sections:
        from tlgan.bench.sampling import bench_sampling

        log.info("bench: sampling")
        result.update(bench_sampling(n=512 if quick else 4096, device=device, repeats=1 if quick else 3))
    if "fit" in sections:
        from tlgan.bench.fitting import bench_fit

        log.info("bench: fitting")
        result.update(bench_fit(quick=quick))
    if "unsupervised" in sections:
        from tlgan.bench.unsupervised import bench_unsupervised

        log.info("bench: unsupervised finders")
        result.update(bench_unsupervised(quick=quick))
    if "toyfaces" in sections:
        from tlgan.toyfaces.render import render_speed

        log.info("bench: toyfaces renderer")
        result["render_faces_per_second"] = round(render_speed(n=512 if quick else 4000), 1)
    if "studio" in sections:
        try:
            from tlgan.bench.studio import bench_studio
        except ImportError:
            log.warning("studio benchmark not available")
        else:
            log.info("bench: studio")
            result.update(bench_studio(quick=quick, device=device))
    if "studio-load" in sections:
        from tlgan.bench.studio_load import bench_studio_load

        log.info("bench: studio under load, batching off and on")
        result.update(bench_studio_load(quick=quick, device=device))
    if "stylegan2" in sections:
        from tlgan.bench.stylegan2 import bench_stylegan2

        log.info("bench: stylegan2")
        result.update(bench_stylegan2(quick=quick, device=device))
    if "stylegan3" in sections:
        from tlgan.bench.stylegan3 import bench_stylegan3

        log.info("bench: stylegan3")
        result.update(bench_stylegan3(quick=quick, device=device))
    if "ray" in sections:
        from tlgan.bench.ray_sampling import bench_ray
        from tlgan.sampling.ray_engine import import_ray

        try:
            import_ray()
        except TlganError:
            if only:
                raise
            log.warning("ray benchmark skipped: Ray is not installed (pip install 'tlgan[ray]')")
        else:
            log.info("bench: sampling on Ray")
            result.update(
                bench_ray(
                    n=512 if quick else 4096,
                    shard_size=128 if quick else 256,
                    device=device,
                    repeats=1 if quick else 2,
                )
            )
    if "inversion" in sections:
        from tlgan.bench.inversion import bench_inversion

        log.info("bench: inversion (encoder, latent optimisation, pivotal tuning)")
        result.update(bench_inversion(quick=quick, device=device))
    if "align" in sections:
        from tlgan.bench.align import bench_align

        log.info("bench: face alignment and tuned storage")
        result.update(bench_align(quick=quick, device=device))
    if "clip" in sections:
        from tlgan.bench.clip import bench_clip

        log.info("bench: attributes in words (CLIP runs, a new phrase, sampling with CLIP, ViT-B/32 cost)")
        result.update(bench_clip(quick=quick, device=device))
    return result
