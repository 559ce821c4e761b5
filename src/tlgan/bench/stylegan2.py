"""StyleGAN2 throughput and loading: the sampling path in w against a bare G-then-F loop, and the
seconds to read an NVlabs-layout pickle, to convert it, and to load the converted folder."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from tlgan.bench.sampling import bench_sampling
from tlgan.models import load_classifier, load_generator


def _best_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_stylegan2(
    quick: bool = False, device: str = "cpu", classifier: str = "toyfaces-classifier"
) -> dict:
    """Random weights at 256 px with ``channel_max`` 256 (64 px, 64 channels with ``quick``).

    Reports the sampling figures of :func:`bench_sampling` in w (``stylegan2_sample_vs_bare_ratio``:
    1.0 means sampling adds nothing to G and F), and load times: ``stylegan2_pkl_load_seconds``
    (restricted unpickling + building + strict loading), ``stylegan2_convert_seconds`` and
    ``stylegan2_folder_load_seconds``, with the pickle-to-folder ratio.
    """
    from tlgan.models.formats import convert
    from tlgan.models.formats.fixtures import tiny_stylegan2, write_nvlabs_pickle

    resolution, channel_max = (64, 64) if quick else (256, 256)
    G = tiny_stylegan2(
        0,
        z_dim=512,
        w_dim=512,
        img_resolution=resolution,
        channel_base=32768,
        channel_max=channel_max,
        mapping_layers=8,
    ).to(device)
    F = load_classifier(classifier, device)
    n, batch = 16, 8  # ~55 GMAC per 256 px image: 16 take tens of seconds on 2 cores
    out = {
        f"stylegan2_{k}": v
        for k, v in bench_sampling(G, F, n=n, batch_size=batch, device=device, repeats=2, space="w").items()
    }
    out["stylegan2_resolution"] = resolution
    out["stylegan2_parameters"] = sum(p.numel() for p in G.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        pkl, folder = Path(tmp) / "network.pkl", Path(tmp) / "converted"
        write_nvlabs_pickle(G.cpu(), pkl)
        out["stylegan2_pkl_megabytes"] = round(pkl.stat().st_size / 1e6, 1)
        out["stylegan2_pkl_load_seconds"] = round(_best_seconds(lambda: load_generator(str(pkl)), 3), 3)
        out["stylegan2_convert_seconds"] = round(_best_seconds(lambda: convert(pkl, folder), 2), 3)
        out["stylegan2_folder_load_seconds"] = round(_best_seconds(lambda: load_generator(str(folder)), 3), 3)
        z = torch.randn(2, 512)
        with torch.inference_mode():
            same = torch.equal(
                load_generator(str(pkl)).synthesize(z), load_generator(str(folder)).synthesize(z)
            )
        out["stylegan2_converted_images_identical"] = bool(same)
    out["stylegan2_pkl_vs_folder_load_ratio"] = round(
        out["stylegan2_pkl_load_seconds"] / out["stylegan2_folder_load_seconds"], 2
    )
    return out
