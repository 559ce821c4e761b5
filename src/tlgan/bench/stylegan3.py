"""StyleGAN3 throughput and loading: the sampling path in w against a bare G-then-F loop, and the
seconds to read an NVlabs-layout pickle, to convert it, and to load the converted folder (T and R)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from tlgan.bench.sampling import bench_sampling
from tlgan.bench.stylegan2 import _best_seconds
from tlgan.models import load_classifier, load_generator


def bench_stylegan3(
    quick: bool = False, device: str = "cpu", classifier: str = "toyfaces-classifier"
) -> dict:
    """Random weights at 256 px with ``channel_max`` 256 (64 px, 64 channels with ``quick``).

    Sampling (config T, w): the figures of :func:`bench_sampling`, ``stylegan3_sample_vs_bare_ratio``
    1.0 meaning that sampling adds nothing to G and F. Loading, for T and R:
    ``stylegan3_{t,r}_pkl_load_seconds`` (restricted unpickling + building + strict loading),
    ``..._convert_seconds``, ``..._folder_load_seconds`` and whether the converted folder's
    images are bit-identical to the pickle's.
    """
    from tlgan.models.formats.stylegan3_fixtures import tiny_stylegan3

    resolution, channel_max = (64, 64) if quick else (256, 256)
    sizes = dict(
        z_dim=512,
        w_dim=512,
        img_resolution=resolution,
        channel_base=32768,
        channel_max=channel_max,
        num_layers=14,
    )
    F = load_classifier(classifier, device)
    out: dict = {"stylegan3_resolution": resolution}
    G = tiny_stylegan3("t", 0, **sizes).to(device)
    # A 256 px StyleGAN3-T image costs about 0.2 TMAC (3 x 3 convolutions on 276 x 276 maps): few images.
    n, batch = (8, 4) if quick else (4, 2)
    sampled = bench_sampling(G, F, n=n, batch_size=batch, device=device, repeats=3, space="w")
    out.update({f"stylegan3_{k}": v for k, v in sampled.items()})
    for cfg in ("t", "r"):
        out.update(_load_times(tiny_stylegan3(cfg, 0, **sizes), f"stylegan3_{cfg}"))
    return out


def _load_times(G, prefix: str) -> dict:
    from tlgan.models.formats import convert
    from tlgan.models.formats.stylegan3_fixtures import write_nvlabs_stylegan3_pickle

    out: dict = {f"{prefix}_parameters": sum(p.numel() for p in G.parameters())}
    with tempfile.TemporaryDirectory() as tmp:
        pkl, folder = Path(tmp) / "network.pkl", Path(tmp) / "converted"
        write_nvlabs_stylegan3_pickle(G, pkl)
        out[f"{prefix}_pkl_megabytes"] = round(pkl.stat().st_size / 1e6, 1)
        load = _best_seconds(lambda: load_generator(str(pkl)), 3)
        out[f"{prefix}_pkl_load_seconds"] = round(load, 3)
        out[f"{prefix}_convert_seconds"] = round(_best_seconds(lambda: convert(pkl, folder), 2), 3)
        folder_load = _best_seconds(lambda: load_generator(str(folder)), 3)
        out[f"{prefix}_folder_load_seconds"] = round(folder_load, 3)
        out[f"{prefix}_pkl_vs_folder_load_ratio"] = round(load / folder_load, 2)
        z = torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            same = torch.equal(
                load_generator(str(pkl)).synthesize(z), load_generator(str(folder)).synthesize(z)
            )
        out[f"{prefix}_converted_images_identical"] = bool(same)
    return out
