"""Levers for the learned edit on the curved check, measured without training a network.

On the inversions kept by ``tlgan delta eval --work DIR`` (10 training and 5 held-out
identities, 7 steps), every held-out start of every ordered pair of steps is moved by the
mean change of the training sequences' latents, after each of these treatments of their
mean path, and scored like the benchmark's rows (PSNR against the true render, the
classifier's off-target change, the error in the edited factor):

- ``smooth``: the polynomial path of ``--path-degree auto`` (what the default model learns);
- ``fourier``: for an angle factor, the path fitted by cos/sin of the angle and of twice it;
- ``rank-R``: the smoothed mean path projected on its R leading principal directions;
- ``regress``: each pair's change regressed (ridge) on the start's coordinates in the
  3-direction path basis, so that it depends on the face;
- ``images``: the path fitted to the training images themselves, G(a_k,i + P_j - P_i)
  against the true render of identity k at step j, from the smoothed path (Adam, ``--steps``);

beside the line, the world's exact edit of each start and the noise-free mean change
(:mod:`tlgan.delta.truth`), and per attribute the off-target change of the exact edit, the
smoothed mean change and the line. Writes JSON to stdout.

    OMP_NUM_THREADS=1 python benchmarks/delta_levers.py --work eval-work/ --warp bend:1.0 > out.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from tlgan.delta.evaluate import (
    ATTRIBUTE_OF,
    _factor_error,
    _probabilities,
    _psnr,
    _sequence_latents,
    _world_latents,
)
from tlgan.delta.smooth import choose_degree, smooth_paths
from tlgan.delta.train import change_basis, linear_direction
from tlgan.delta.truth import exact_edit, exact_mean_path
from tlgan.delta.warp import warped
from tlgan.inversion.encoder import frozen
from tlgan.inversion.losses import reconstruction_loss
from tlgan.models import load_classifier, load_generator
from tlgan.toyfaces import world


def centred_path(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return (x - x.mean(1, keepdim=True)).mean(0)


def measure(gen, encoder, classifier, work: Path, factor: str, image_steps: int) -> dict:
    """Every row of the module docstring for one factor."""
    n = 7
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    ii, jj = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    train_seqs, train = _sequence_latents(factor, 10, n, 0, gen, work / factor / "train", 100, False, encoder)
    test_seqs, test = _sequence_latents(factor, 5, n, 1, gen, work / factor / "test", 100, False, encoder)
    t, d, k = test.shape[0], test.shape[-1], train.shape[0]
    values = torch.as_tensor(train_seqs.values, dtype=torch.float64)
    start = test[:, ii].reshape(-1, d)
    targets = test_seqs.images[:, jj].flatten(0, 1)
    want = torch.as_tensor(test_seqs.values, dtype=torch.float32)[jj].repeat(t)
    keep = [a for a, name in enumerate(classifier.attributes) if name != ATTRIBUTE_OF.get(factor)]
    base = _probabilities(gen, classifier, start)
    per_attribute = {}

    def score(latents: torch.Tensor, name: str | None = None) -> dict:
        probs = _probabilities(gen, classifier, latents)
        change = (probs - base).abs().mean(0)
        if name is not None:
            per_attribute[name] = {a: round(float(change[i]), 4) for i, a in enumerate(classifier.attributes)}
        got = world.factors(_world_latents(gen, latents))[factor]
        return {
            "psnr_db": round(float(_psnr(gen, latents, targets).mean()), 3),
            "off_target_classifier": round(float(change[keep].mean()), 4),
            "factor_error": round(float(_factor_error(factor, got, want).mean()), 3),
        }

    def moved(path: torch.Tensor) -> torch.Tensor:
        return start + (path[jj] - path[ii]).float().repeat(t, 1)

    rows: dict = {}
    steps = (want - torch.as_tensor(test_seqs.values, dtype=torch.float32)[ii].repeat(t))[:, None]
    rows["line"] = score(start + steps * linear_direction([train], [values])[None], "line")
    rows["exact"] = score(exact_edit(gen, start, factor, want), "exact")
    rows["exact_mean"] = score(moved(exact_mean_path(gen, train_seqs.latents, factor, values)))
    rows["mean"] = score(moved(centred_path(train)))
    degree = choose_degree(train, values)
    smooth = smooth_paths(train, values, degree)
    path = centred_path(smooth)
    rows[f"smooth (degree {degree})"] = score(moved(path), "smooth")
    if factor in ("light_angle", "background_hue"):
        turn = 360.0 if factor == "light_angle" else 1.0
        angle = values * (2 * math.pi / turn)
        design = torch.stack([angle.cos(), angle.sin(), (2 * angle).cos(), (2 * angle).sin()], 1)
        design = design - design.mean(0)
        rows["fourier"] = score(moved(design @ torch.linalg.lstsq(design, centred_path(train)).solution))
    for rank in (2, 3, 4):
        _, _, vh = torch.linalg.svd(path, full_matrices=False)
        rows[f"rank-{rank}"] = score(moved(path @ vh[:rank].T @ vh[:rank]))
    basis = change_basis([smooth.float()], 3, [values], path=True).double()
    regressed = torch.empty(t * len(pairs), d, dtype=torch.float64)
    x = smooth.double()
    for p, (i, j) in enumerate(pairs):
        coords = x[:, i] @ basis.T
        mean_coords = coords.mean(0)
        change = x[:, j] - x[:, i]
        slope = torch.linalg.solve(
            (coords - mean_coords).T @ (coords - mean_coords)
            + 10.0 * torch.eye(len(basis), dtype=torch.float64),
            (coords - mean_coords).T @ (change - change.mean(0)),
        )
        s = test[:, i].double()
        regressed[p :: len(pairs)] = s + change.mean(0) + (s @ basis.T - mean_coords) @ slope
    rows["regress (ridge 10)"] = score(regressed.float())
    fitted = path.float().clone().requires_grad_(True)
    opt = torch.optim.Adam([fitted], lr=0.01)
    starts = train[:, ii].reshape(-1, d)
    images = train_seqs.images[:, jj].flatten(0, 1)
    t0 = time.perf_counter()
    with frozen(gen):
        loss_of = reconstruction_loss(images, gradient_weight=0.5)
        for _ in range(image_steps):
            loss = loss_of(gen.synthesize(starts + (fitted[jj] - fitted[ii]).repeat(k, 1), "z")).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    rows["images"] = {
        **score(moved(fitted.detach())),
        "seconds": round(time.perf_counter() - t0, 1),
        "moved_from_smooth": round(float((fitted.detach() - path.float()).norm(dim=1).mean()), 3),
    }
    return {"path_degree": degree, "rows": rows, "off_target_per_attribute": per_attribute}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", required=True, help="the --work folder of tlgan delta eval")
    ap.add_argument("--warp", default="bend:1.0")
    ap.add_argument("--factors", default="yaw,light_angle")
    ap.add_argument("--steps", type=int, default=50, help="Adam steps of the image-fitted path")
    args = ap.parse_args()
    torch.manual_seed(0)
    inner = load_generator("toyfaces-gan")
    classifier = load_classifier("toyfaces-classifier")
    gen, encoder = warped(inner, args.warp)
    work = Path(args.work) / gen.name.replace(":", "-").replace("+", "_")
    out: dict = {"warp": args.warp, "image_fit_steps": args.steps, "factors": {}}
    for factor in args.factors.split(","):
        out["factors"][factor] = measure(gen, encoder, classifier, work, factor, args.steps)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
