"""What a distillation student costs: seconds per training step and generated images per second.

Usage: OMP_NUM_THREADS=1 python benchmarks/distill_student_cost.py [OUT.json]

For each DCGAN student (transposed convs at width 32, the bundled ``toyfaces-gan``'s shape, and
nearest-upsampling students at widths 24, 32 and 48): the median of 5 distillation steps at batch
48 (renders as targets, the bundled classifier's feature loss, edge and Laplacian terms on) after
one warm-up step, and generation at batch 256, best of 3. The bundled generator's images/s are
measured in the same run, interleaved with the students', as the baseline of the ratios. The
load average before and after is recorded: the figures are only comparable within one run.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch

from tlgan.models import load_classifier, load_generator
from tlgan.models.networks import count_macs
from tlgan.train.distill import distillation_loss, make_student
from tlgan.train.stylegan2 import training_images

STUDENTS = [("transpose", 32), ("nearest", 24), ("nearest", 32), ("nearest", 48)]


def main(out: str | None = None) -> dict:
    load_before = os.getloadavg()
    teacher = load_generator("toyfaces-render")
    classifier = load_classifier("toyfaces-classifier").eval().requires_grad_(False)
    bundled = load_generator("toyfaces-gan").eval()
    z_train = teacher.sample_latents(48, seed=0)
    z_gen = teacher.sample_latents(256, seed=1)
    with torch.no_grad():
        target = teacher.synthesize(z_train)
    rows = {}
    for upsample, width in STUDENTS:
        torch.manual_seed(0)
        G = make_student("dcgan", 512, 64, width, None, upsample).train()
        opt = torch.optim.Adam(G.parameters(), lr=1e-3)
        steps = []
        for _ in range(6):
            t0 = time.perf_counter()
            with torch.no_grad():
                target = teacher.synthesize(z_train)
            loss = distillation_loss(training_images(G, z_train), target, classifier, 0.1, 1.0, 1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps.append(time.perf_counter() - t0)
        G.eval()
        own, base = [], []
        with torch.inference_mode():
            for _ in range(3):
                t0 = time.perf_counter()
                G.synthesize(z_gen)
                own.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                bundled.synthesize(z_gen)
                base.append(time.perf_counter() - t0)
        rows[f"{upsample}-{width}"] = {
            "gmac_per_face": round(count_macs(G, z_gen) / 1e9, 4),
            "seconds_per_step": round(statistics.median(steps[1:]), 3),
            "images_per_second": round(len(z_gen) / min(own), 1),
            "bundled_images_per_second": round(len(z_gen) / min(base), 1),
            "speed_ratio_to_bundled": round(min(base) / min(own), 3),
        }
        print(upsample, width, rows[f"{upsample}-{width}"], flush=True)
    result = {
        "threads": torch.get_num_threads(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "students": rows,
    }
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(*sys.argv[1:])
