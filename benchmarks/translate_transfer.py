"""Does a translation model's edit carry over from the generator's images to fresh renders?

Usage: python benchmarks/translate_transfer.py N MODEL_DIR...

For each model (toyfaces-gan, default axes, an attribute of the bundled classifier): the mean
P(attribute) after translating N fresh renders (world samples 1,000,000.. of seed 0, as
`tlgan toyfaces eval-translate`) and 64 of the GAN's own faces, beside the true edit's and the
GAN edit's; the PSNR inside the part the true edit redraws, the change outside it, and the
fraction of renders whose P rises along amounts 0, A/4, ..., A. Translation only (no inversion),
so it runs in a minute on 2 cores; the BENCHMARKS table "Instant edits" was measured with N = 30.
"""

from __future__ import annotations

import json
import sys

import torch

from tlgan.models import load_classifier, load_generator
from tlgan.pipeline import default_axes
from tlgan.toyfaces.translate_eval import (
    _batched,
    _continuity,
    edited_part,
    masked_psnr_db,
    outside_change,
    true_axis,
    with_yaw,
    world_latents,
)
from tlgan.translate import edit_pairs, load_translation, translate
from tlgan.translate.train import step_latents


def main(n: str, *model_dirs: str) -> None:
    torch.set_grad_enabled(False)
    renderer, gan = load_generator("toyfaces-render"), load_generator("toyfaces-gan")
    classifier = load_classifier("toyfaces-classifier")
    axes = with_yaw(default_axes(progress=False))
    z = world_latents(int(n), 0)
    renders = _batched(lambda b: renderer.synthesize(b, "z"), z)
    gan_latents = step_latents(gan, "z", 64, 123, 10**6)  # a step no training run reaches
    for folder in model_dirs:
        model = load_translation(folder)
        name, amount = model.attribute, model.amount
        index = classifier.attributes.index(name)

        def prob(images, index=index):
            return float(classifier.probabilities(images)[:, index].mean())

        truth = _batched(lambda b, nm=name, a=amount: renderer.synthesize(b + a * true_axis(nm), "z"), z)
        mask = edited_part(renders, truth)
        out = translate(renders, model, amount)
        gan_source, gan_target = edit_pairs(gan, axes, name, amount, gan_latents)
        continuity = _continuity(model, renders, classifier, name, amount, 5)
        row = {
            "model": folder,
            "renders": {
                "p_translated": prob(out),
                "p_true_edit": prob(truth),
                "p_no_edit": prob(renders),
                "inside_psnr_db": float(masked_psnr_db(out, truth, mask).nanmean()),
                "inside_psnr_db_no_edit": float(masked_psnr_db(renders, truth, mask).nanmean()),
                "outside_change": float(outside_change(out, renders, mask).mean()),
                "monotonic_fraction": continuity["monotonic_fraction"],
                "mean_probability": continuity["mean_probability"],
            },
            "gan_faces": {
                "p_translated": prob(translate(gan_source, model, amount)),
                "p_gan_edit": prob(gan_target),
                "p_no_edit": prob(gan_source),
            },
        }
        print(json.dumps(row))


if __name__ == "__main__":
    main(*sys.argv[1:])
