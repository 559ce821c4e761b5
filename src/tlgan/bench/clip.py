"""Attributes in words: what a stored CLIP run saves, and what sampling with CLIP costs.

- ``phrase``: a new phrase on a stored run of ``n`` samples becomes a fitted axis
  (:meth:`tlgan.sampling.Run.add_attributes` + :func:`tlgan.fit_axes`, reading the run from
  disk), against scoring the run's images again (the generator then CLIP on the same latents);
  and the seconds the studio's "add an attribute" reports for a phrase on the same run.
- ``sampling``: ``tlgan sample`` with a CLIP classifier (which also stores each embedding)
  against a bare loop of the generator then CLIP on the same batches of 64 (:func:`bench_sampling`:
  12 back-to-back pairs of 1,024 faces, so that the median of the pairs' ratios sees through
  the load of a shared machine).
- ``vit_b32``: seconds per 10,000 images for a CLIP of ViT-B/32's sizes, built from
  ``CLIPConfig`` with random weights (no download), on 64 x 64 images resized to 224: the image
  tower's cost does not depend on the weights' values.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from tlgan.bench.sampling import bench_sampling
from tlgan.models import load_classifier, load_generator
from tlgan.sampling import LocalEngine, sample

PHRASES = (
    ("Words_Beard", "a photo of a bearded person", "a photo of a person without a beard"),
    ("Words_Hat", "a photo of a person with a hat", "a photo of a person without a hat"),
    ("Words_Glasses", "a photo of a person with glasses", "a photo of a person without glasses"),
    ("Words_Smile", "a photo of a person smiling", "a photo of a person with a neutral expression"),
    ("Words_Blond", "a photo of a person with blond hair", "a photo of a person with black hair"),
)


def vit_b32_config():
    """A ``CLIPConfig`` with ViT-B/32's sizes (image tower 12 x 768, patch 32, 224 px; text tower
    12 x 512, context 77; projection 512) and a tokenizer whose end-of-text id it pools at."""
    from tlgan.models.clip import require_transformers
    from tlgan.train.clip import build_tokenizer

    transformers = require_transformers()
    tokenizer = build_tokenizer("a photo of a person with without beard".split(), max_length=77)
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
            "max_position_embeddings": 77,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        vision_config={
            "image_size": 224,
            "patch_size": 32,
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
        },
        projection_dim=512,
    )
    return config, tokenizer


def bench_vit_b32(n: int = 128, batch_size: int = 64, repeats: int = 2, device: str = "cpu") -> dict:
    """Seconds per 10,000 64 x 64 images embedded by a random-weight ViT-B/32-sized CLIP (best of ``repeats``)."""
    from tlgan.models.clip import CLIPClassifier, require_transformers

    transformers = require_transformers()
    config, tokenizer = vit_b32_config()
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval().requires_grad_(False)
    clip = CLIPClassifier(model, tokenizer, image_size=224, name="vit-b32-random").to(device)
    images = torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        clip.embed_images(images[:2].to(device))  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for i in range(0, n, batch_size):
                clip.embed_images(images[i : i + batch_size].to(device)).cpu()
            times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "vit_b32_random_weights_seconds_per_10k_images": round(best / n * 10_000, 1),
        "vit_b32_images_per_second": round(n / best, 1),
    }


def bench_phrase(
    generator: str = "toyfaces-gan",
    classifier: str = "clip:",
    n: int = 20_000,
    repeats: int = 5,
    method: str | None = None,
    device: str = "cpu",
) -> dict:
    """A new phrase -> fitted axis on a stored run of ``n`` samples, against scoring them again.

    ``method`` None is what `tlgan fit RUN --attribute` and the studio use: the default finder of
    the run's space (:func:`tlgan.axes.finders.default_method`).

    The run is sampled once into a temporary folder; each repeat adds another phrase of
    :data:`PHRASES` with the classifier already loaded (as a server keeps it) and fits its axis.
    The baseline generates and scores the run's ``n`` latents again, batch by batch.
    """
    from tlgan.pipeline import fit_axes
    from tlgan.sampling import Run

    G, F = load_generator(generator, device), load_classifier(classifier, device)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        t0 = time.perf_counter()
        sample(
            G,
            F,
            n,
            out,
            shard_size=4096,
            engine=LocalEngine(device=device),
            progress=False,
            generator_spec=generator,
            classifier_spec=classifier,
        )
        sample_seconds = time.perf_counter() - t0
        times = []
        for name, positive, negative in PHRASES[:repeats]:
            t0 = time.perf_counter()
            run = Run.open(out)
            run.add_attributes({name: {"positive": positive, "negative": negative}}, F)
            used = fit_axes(run, method, attributes=[name]).method
            times.append(time.perf_counter() - t0)
        latents = Run.open(out).latents()
        studio_seconds = _studio_rows(out, repeats, device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, n, 256):
            F.logits(G.synthesize(latents[i : i + 256].to(device))).cpu()
    rescore = time.perf_counter() - t0
    return {
        "phrase_n": n,
        "phrase_method": used,
        "phrase_to_axis_seconds": round(min(times), 3),
        "phrase_to_axis_median_seconds": round(float(statistics.median(times)), 3),
        "phrase_rescore_seconds": round(rescore, 2),
        "phrase_vs_rescore_ratio": round(min(times) / rescore, 4),
        "phrase_sample_run_seconds": round(sample_seconds, 1),
        "studio_phrase_to_row_seconds": round(studio_seconds, 3),
    }


def _studio_rows(run_dir, repeats: int, device: str) -> float:
    """The least ``seconds`` the studio's "add an attribute" reports (POST /api/words without the
    HTTP round trip) for new phrases on the run: the run held in memory, the axis fitted, the row added."""
    from tlgan.studio.words import app_from_run

    rows = app_from_run(run_dir, device=device, max_batch=1).state.words
    seconds = []
    for k, (_, positive, negative) in enumerate(PHRASES[:repeats]):
        seconds.append(rows.add(positive, negative, name=f"Studio_{k}")["seconds"])
    return min(seconds)


def bench_clip(quick: bool = False, device: str = "cpu") -> dict:
    """Every figure of this module (see its docs); ``quick`` shrinks the runs."""
    result = {}
    # batch_size=64: the bare loop runs on the very batches sample_shard hands the networks (CHUNK)
    sampled = bench_sampling(
        "toyfaces-gan",
        load_classifier("clip:", device),
        n=512 if quick else 1024,
        batch_size=64,
        device=device,
        repeats=1 if quick else 12,
    )
    result.update({f"clip_{k}": v for k, v in sampled.items()})
    result.update(bench_phrase(n=2000 if quick else 20_000, repeats=2 if quick else 5, device=device))
    result.update(bench_vit_b32(n=64 if quick else 128, repeats=1 if quick else 2, device=device))
    return result
