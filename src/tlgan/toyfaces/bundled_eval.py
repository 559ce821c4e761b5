"""`tlgan toyfaces eval`: how good the bundled classifier and generator are, against the renderer's truth.

- Classifier: balanced accuracy per attribute on freshly rendered faces (a seed never used for
  training data) against the renderer's ground-truth labels.
- Generator: the classifier's attribute frequencies and attribute-correlation matrix on generated
  faces against the same on rendered faces, and a Frechet distance in the classifier's feature
  space, beside the distance between two independent render sets (the floor), and sharpness:
  the mean over images of the variance of the Laplacian, generated against rendered.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from scipy import linalg

from tlgan.editing.edit import draw_latents
from tlgan.errors import TlganError
from tlgan.evaluation.metrics import label_correlation
from tlgan.models import load_classifier, load_generator

# Training data is exported with seed 0; evaluation draws from seeds no export uses.
EVAL_SEED = 90_001
FLOOR_SEED = 90_002


def balanced_accuracy(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per column: mean of the true-positive and true-negative rates. Inputs bool (N, A)."""
    predicted, truth = predicted.bool(), truth.bool()
    tpr = (predicted & truth).sum(0) / truth.sum(0).clamp(min=1)
    tnr = (~predicted & ~truth).sum(0) / (~truth).sum(0).clamp(min=1)
    return (tpr + tnr).double() / 2


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature rows of ``a`` (N, F) and ``b`` (M, F)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def laplacian_variance(images: torch.Tensor) -> torch.Tensor:
    """Sharpness of each image: the variance of the 3x3 Laplacian of its grey level.

    ``images`` (N, 3, H, W) in [-1, 1] -> (N,) float64. Grey is the mean of the channels mapped to
    [0, 1]; the Laplacian (4-neighbour, valid region only) is large at hard edges and at speckle,
    small in flat regions and blur, so compare it together with a distance that punishes speckle.
    """
    if images.ndim != 4 or images.shape[-1] < 3 or images.shape[-2] < 3:
        raise TlganError(f"images must be (N, C, H, W) with H, W >= 3, got {tuple(images.shape)}")
    grey = (images.double().mean(1, keepdim=True) + 1) / 2
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    lap = torch.nn.functional.conv2d(grey, kernel.view(1, 1, 3, 3))
    return lap.flatten(1).var(1)


@torch.inference_mode()
def _classify(classifier, images: torch.Tensor, batch_size: int = 250):
    logits, feats = [], []
    for i in range(0, len(images), batch_size):
        batch = images[i : i + batch_size]
        logits.append(classifier.logits(batch))
        feats.append(classifier.embedding(batch))
    return torch.cat(logits), torch.cat(feats).double().numpy()


def evaluate_bundled(
    n: int = 2000,
    generator: str = "toyfaces-gan",
    classifier: str = "toyfaces-classifier",
    device: str = "cpu",
) -> dict:
    from tlgan.toyfaces.render import render_speed

    renderer = load_generator("toyfaces-render", device)
    G = load_generator(generator, device)
    F = load_classifier(classifier, device)
    names = list(F.attributes)

    z = renderer.sample_latents(n, seed=EVAL_SEED)
    truth = renderer.labels(z)
    render_images = draw_latents(renderer, z)
    render_logits, render_feats = _classify(F, render_images)
    sharp_render = float(laplacian_variance(render_images).mean())
    del render_images
    order = [
        list(renderer.attributes).index(a) if hasattr(renderer, "attributes") else i
        for i, a in enumerate(names)
    ]
    accuracy = balanced_accuracy(render_logits > 0, truth[:, order])

    gen_images = draw_latents(G, G.sample_latents(n, seed=EVAL_SEED))
    gen_logits, gen_feats = _classify(F, gen_images)
    sharp_gen = float(laplacian_variance(gen_images).mean())
    del gen_images
    _, floor_feats = _classify(F, draw_latents(renderer, renderer.sample_latents(n, seed=FLOOR_SEED)))
    freq_render = (render_logits > 0).double().mean(0)
    freq_gen = (gen_logits > 0).double().mean(0)
    # NaN marks an attribute that never changes in one set; it has no correlation to compare.
    corr_diff = (label_correlation(gen_logits > 0) - label_correlation(render_logits > 0)).abs()
    off_diagonal = ~torch.eye(len(names), dtype=torch.bool)

    t0 = time.perf_counter()
    speed = render_speed(n=max(n, 1000))
    return {
        "n": n,
        "classifier": {
            "name": classifier,
            "balanced_accuracy": {a: round(float(v), 4) for a, v in zip(names, accuracy, strict=True)},
            "mean_balanced_accuracy": round(float(accuracy.mean()), 4),
            "min_balanced_accuracy": round(float(accuracy.min()), 4),
        },
        "generator": {
            "name": generator,
            "frequency_render": {a: round(float(v), 4) for a, v in zip(names, freq_render, strict=True)},
            "frequency_generated": {a: round(float(v), 4) for a, v in zip(names, freq_gen, strict=True)},
            "frequency_abs_diff_max": round(float((freq_gen - freq_render).abs().max()), 4),
            "correlation_abs_diff_mean": round(float(corr_diff[off_diagonal].nanmean()), 4),
            "frechet_distance": round(frechet_distance(gen_feats, render_feats), 4),
            "frechet_distance_floor": round(frechet_distance(floor_feats, render_feats), 4),
            "laplacian_variance_render": round(sharp_render, 6),
            "laplacian_variance_generated": round(sharp_gen, 6),
            "sharpness_ratio": round(sharp_gen / sharp_render, 4),
        },
        "render_faces_per_second": round(speed, 1),
        "render_speed_seconds": round(time.perf_counter() - t0, 2),
    }
