"""Draw docs/translate.png: a fresh render, its translation at three amounts, invert + edit, the true edit.

Usage: python benchmarks/translate_figure.py MODELS_DIR [OUT.png]

MODELS_DIR holds translation models made by `tlgan train translate` (one subfolder per
attribute, as for `tlgan toyfaces eval-translate`). One row per attribute; the face is sample
FIRST_INDEX of seed 7 of the world, which no training step draws.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from tlgan.editing.edit import edit_latents
from tlgan.imaging import save_grid
from tlgan.inversion.optimize import invert
from tlgan.models import load_classifier, load_generator
from tlgan.models.zoo import bundled_encoder
from tlgan.pipeline import default_axes
from tlgan.toyfaces.translate_eval import true_axis, with_yaw, world_latents
from tlgan.translate import load_translation, translate


def main(models_dir: str, out: str = "docs/translate.png") -> None:
    generator = load_generator("toyfaces-gan")
    renderer = load_generator("toyfaces-render")
    classifier = load_classifier("toyfaces-classifier")
    z = world_latents(1, seed=7)
    with torch.no_grad():
        photo = renderer.synthesize(z)
    found = invert(generator, photo, encoder=bundled_encoder(generator), classifier=classifier)
    axes = with_yaw(default_axes(progress=False))
    rows = []
    for name in ("Eyeglasses", "Beard", "Gray_Hair", "Smiling"):
        folder = Path(models_dir) / name
        if not folder.is_dir():
            continue
        model = load_translation(folder)
        amount = model.amount
        axis = true_axis(name)
        moved = edit_latents(found.latents, axes, {name: amount}, space="z")
        with torch.no_grad():
            inverted_edit = generator.synthesize(moved)
            truth = renderer.synthesize(z + amount * axis)
        rows.append(
            torch.cat(
                [photo]
                + [translate(photo, model, amount * k / 3) for k in (1, 2, 3)]
                + [inverted_edit.cpu(), truth]
            )
        )
    save_grid(torch.cat(rows), out, nrow=6, upscale=2)
    print(
        f"wrote {out}: rows {len(rows)}, columns photo | translate A/3, 2A/3, A | invert + edit | true edit"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
