"""The demo's knob from words: a phrase -> an axis -> an edit grid, with the bundled toyfaces-clip.

:func:`words_demo` samples a small run scored by ``clip:`` (which stores each image's CLIP
embedding), adds one attribute described in words to the finished run
(:meth:`tlgan.sampling.Run.add_attributes`: no image is generated again), fits its axis and
draws a face moved along it. When the generator knows its true axes (toyfaces), the axis is
compared with the true one of the attribute the phrase describes.
"""

from __future__ import annotations

import time
from pathlib import Path

from tlgan.models.base import Generator

#: (row name, positive phrase, negative phrase, the world's attribute it describes).
DEMO_WORDS = (
    "Glasses",
    "a photo of a person wearing glasses",
    "a photo of a person without glasses",
    "Eyeglasses",
)
STEPS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)


def words_demo(
    out: str | Path,
    generator: Generator,
    generator_spec: str,
    *,
    n: int = 2000,
    seed: int = 0,
    space: str = "z",
    face_seed: int = 7,
    method: str = "logistic",
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Write ``out/run`` (``n`` samples scored by the bundled CLIP), ``out/axes.safetensors`` (the
    phrase's axis) and ``out/glasses_from_words.png`` (one face moved along it by :data:`STEPS`).

    Returns {"phrase", "negative", "samples", "sample_seconds", "phrase_to_axis_seconds",
    "cosine_to_truth" (or None), "outputs"}; resumes a run left in ``out``.
    """
    import torch

    from tlgan.editing.edit import draw_latents, edit_latents_grid
    from tlgan.imaging import save_grid
    from tlgan.models import load_classifier
    from tlgan.pipeline import fit_axes
    from tlgan.sampling import LocalEngine, sample

    name, positive, negative, truth_name = DEMO_WORDS
    out = Path(out)
    clip = load_classifier("clip:", device)
    started = time.perf_counter()
    run = sample(
        generator,
        clip,
        n,
        out / "run",
        seed=seed,
        space=space,
        engine=LocalEngine(device=device),
        resume=(out / "run").exists(),
        progress=progress,
        generator_spec=generator_spec,
        classifier_spec="clip:",
    )
    sample_seconds = time.perf_counter() - started
    started = time.perf_counter()
    if name not in run.attributes:
        run.add_attributes({name: {"positive": positive, "negative": negative}}, clip)
    axes = fit_axes(run, method, attributes=[name])
    phrase_seconds = time.perf_counter() - started
    axes.save(out / "axes.safetensors")
    latent = generator.sample_latents_at([face_seed], seed=seed, space=space)[0]
    images = draw_latents(generator, edit_latents_grid(latent, axes, [name], list(STEPS)), space)
    save_grid(images, out / "glasses_from_words.png", nrow=len(STEPS), upscale=2)
    truth = generator.true_axes(space=space)
    cosine = None
    if truth is not None and truth_name in truth.attributes:
        cosine = round(float(torch.dot(axes[name], truth[truth_name])), 4)
    return {
        "phrase": positive,
        "negative": negative,
        "samples": run.n,
        "sample_seconds": round(sample_seconds, 2),
        "phrase_to_axis_seconds": round(phrase_seconds, 3),
        "cosine_to_truth": cosine,
        "outputs": {"axes": "axes.safetensors", "grid": "glasses_from_words.png", "run": "run/"},
    }
