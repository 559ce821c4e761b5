"""Seconds per image of the two blends of a translation model, at half and at all of its amount.

Usage: python benchmarks/translate_blend_speed.py MODEL_DIR [N]

N fresh toyfaces renders (default 100) translated by each blend; the fastest of 3 runs each.
Mixing the networks' images (``outputs``) costs two forward passes between the ends and one at
them; blending their weights (``weights``) one pass plus the blend of the state. The ratio to
the weight blend at the same amount, in the same run, is what carries over to other machines.
"""

from __future__ import annotations

import sys
import time

import torch

from tlgan.models import load_generator
from tlgan.toyfaces.translate_eval import world_latents
from tlgan.translate import load_translation, translate


def main(model_dir: str, n: str = "100") -> None:
    renderer = load_generator("toyfaces-render")
    with torch.no_grad():
        images = renderer.synthesize(world_latents(int(n), 0))
    model = load_translation(model_dir)
    for fraction in (0.5, 1.0):
        seconds = {}
        for blend in ("weights", "outputs"):
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                translate(images, model, fraction * model.amount, blend=blend)
                runs.append((time.perf_counter() - t0) / len(images))
            seconds[blend] = min(runs)
        print(
            f"amount {fraction:g} A: weights {seconds['weights'] * 1e3:.2f} ms/image, outputs "
            f"{seconds['outputs'] * 1e3:.2f} ms/image ({seconds['outputs'] / seconds['weights']:.2f}x)"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
