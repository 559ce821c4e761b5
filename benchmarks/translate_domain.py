"""Continuity of translation models on renders and on the GAN's images of the same latents.

Usage: python benchmarks/translate_domain.py MODELS_DIR [--n 100] [--seeds 0,1,2] > out.json

For each model (one subfolder per attribute, as for `tlgan toyfaces eval-translate`) and each
seed, the faces of `tlgan toyfaces eval-translate --seed S` (world latents FIRST_INDEX.. of S)
are drawn twice: by the analytic renderer (what the eval translates) and by `toyfaces-gan`
(the kind of image the models were trained on). Both are translated at 0, A/4, ..., A with the
mixed outputs and read by the bundled classifier; the JSON gives, per attribute and seed, the
strict monotonic share on each (the eval's `monotonic_fraction`) and the faces that dip.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tlgan.models import load_classifier, load_generator
from tlgan.toyfaces.translate_eval import _batched, _continuity, world_latents
from tlgan.translate import load_translation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models_dir")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    gan = load_generator("toyfaces-gan")
    renderer = load_generator("toyfaces-render")
    classifier = load_classifier("toyfaces-classifier")
    models = {
        p.name: load_translation(p)
        for p in sorted(Path(args.models_dir).iterdir())
        if (p / "translation.json").is_file() and p.name in classifier.attributes
    }
    out: dict = {"n": args.n, "attributes": {name: {} for name in models}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        z = world_latents(args.n, seed)
        with torch.no_grad():
            sources = {
                "render": _batched(lambda b: renderer.synthesize(b, "z"), z),
                "gan": _batched(lambda b: gan.synthesize(b, "z"), z),
            }
        for name, model in models.items():
            row = {}
            for kind, images in sources.items():
                c = _continuity(model, images, classifier, name, model.amount, 5)
                row[kind] = {
                    "monotonic_fraction": round(c["monotonic_fraction"], 4),
                    "dipping_faces": [face[0] for face in c["dips"]["per_face"]],
                }
            out["attributes"][name][str(seed)] = row
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
