"""Draw docs/gan_vs_render.png: renders and the bundled generator's faces on the same latents.

Usage: python benchmarks/gan_vs_render_figure.py [GENERATOR] [OUT.png]

Rows 1 and 3 are `toyfaces-render`, rows 2 and 4 the generator (default `toyfaces-gan`) on the
same 20 latents: the first 20 of the evaluation seed of `tlgan toyfaces eval`, which no
training step draws. 64 px faces shown at 2x, nearest neighbour.
"""

from __future__ import annotations

import sys

import torch

from tlgan.imaging import save_grid
from tlgan.models import load_generator
from tlgan.toyfaces.bundled_eval import EVAL_SEED


def main(generator: str = "toyfaces-gan", out: str = "docs/gan_vs_render.png") -> None:
    renderer, student = load_generator("toyfaces-render"), load_generator(generator)
    z = renderer.sample_latents(20, seed=EVAL_SEED)
    with torch.no_grad():
        render, generated = renderer.synthesize(z), student.synthesize(z)
    rows = [render[:10], generated[:10], render[10:], generated[10:]]
    save_grid(torch.cat(rows), out, nrow=10, padding=2, upscale=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
