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
- ``face``: edits that depend on the start (:func:`face_levers`), each the smoothed mean
  change plus a term in the start's coordinates c = B b_i on the first m directions B of
  the path basis, the term's output kept in few directions so that ten faces can fit it:
  ``regress`` regresses (ridge, shrinking towards the mean change) the change of the
  coordinates B (b_j - b_i) on c, linearly or with the squares and products of c, per pair
  (i, j); ``within`` takes the 1 or 2 directions of the m along which one face's frames
  spread most against how far the faces lie apart (driving directions), fits over every
  frame of every training face, with one intercept per face, the latent off them as a
  quadratic function of the frame's driving coordinates cut to rank 1 (the relation a bend
  ``u + k (p.u)^2 q`` leaves between the coordinates of one face's frames), and adds that
  function's change along the move, less its mean over the training starts. Which setting, and
  whether any beats the plain mean change, is chosen by leaving one training identity out
  (the PSNR of its edited starts against its own true renders, every pair; a latent error
  against its own inverted targets was tried first and rewards predicting each face's
  inversion bias, which the renders do not share); the held-out figures of every setting
  are reported beside the choice, never used for it;

beside the line, the world's exact edit of each start and the noise-free mean change
(:mod:`tlgan.delta.truth`), two references that are told the warp (:func:`bend_rows`: the
smoothed mean change with its part along the bent-into direction q set from the start's own
coordinates on the bent axes, with the warp's strength, with it on the factor's own axis
only, or with strengths fitted on the training frames), and per attribute the off-target change of the exact edit, the
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
from tlgan.delta.warp import factor_axis, warped
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
    rows.update(face_levers(gen, train, train_seqs.images, test, values, pairs, degree, score))
    rows.update(bend_rows(gen, factor, train, test, values, pairs, degree, score))
    rows["images"] = {
        **score(moved(fitted.detach())),
        "seconds": round(time.perf_counter() - t0, 1),
        "moved_from_smooth": round(float((fitted.detach() - path.float()).norm(dim=1).mean()), 3),
    }
    return {"path_degree": degree, "rows": rows, "off_target_per_attribute": per_attribute}


def _quadratic(c: torch.Tensor) -> torch.Tensor:
    """(..., m) -> (..., m (m + 1) / 2): the squares and products of the coordinates."""
    m = c.shape[-1]
    return torch.stack([c[..., a] * c[..., b] for a in range(m) for b in range(a, m)], -1)


def _ridge(x: torch.Tensor, y: torch.Tensor, ridge: float) -> torch.Tensor:
    """Least squares of centred y (N, q) on centred x (N, f), penalty ridge x mean |x_col|^2."""
    reg = ridge * float((x * x).sum()) / x.shape[1]
    return torch.linalg.solve(x.T @ x + reg * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)


def face_editor(train: torch.Tensor, values: torch.Tensor, degree: int, setting: tuple):
    """Fit one face-dependent lever on training sequences ``train`` (K, n, D) with factor
    ``values`` (n,); returns ``edit(starts, i, j)``: starts (T, D) at step i moved to step j,
    (T, D) float64. ``setting``: ("mean",), ("regress", m, features, ridge) or
    ("within", m, drive, ridge); see the module docstring."""
    x = train.double()
    smooth = smooth_paths(x, values, degree)
    path = centred_path(smooth)
    kind = setting[0]
    if kind == "mean":
        return lambda s, i, j: s.double() + (path[j] - path[i])
    m = setting[1]
    basis = change_basis([smooth.float()], m, [values], path=True).double()  # (m', D)
    coords = x @ basis.T  # (K, n, m') every face's own coordinates
    if kind == "regress":
        _, features, ridge = setting[1:]

        def feats(c):
            return c if features == "linear" else torch.cat([c, _quadratic(c)], -1)

        def edit(s, i, j):
            s = s.double()
            mu = coords[:, i].mean(0)
            f = feats(coords[:, i] - mu)
            fm = f.mean(0)
            moved = coords[:, j] - coords[:, i]
            w = _ridge(f - fm, moved - moved.mean(0), ridge)
            return s + (path[j] - path[i]) + ((feats(s @ basis.T - mu) - fm) @ w) @ basis

        return edit
    _, _, drive, ridge = setting
    # Driving directions: those of the basis along which the frames of one face spread most
    # against how far the faces lie apart (a bend's driving axes move with the factor and
    # the faces share them; the direction bent into carries each face's own offset).
    within = coords - coords.mean(1, keepdim=True)
    spread = torch.einsum("kna,knb->ab", within, within) / (within.shape[0] * within.shape[1])
    offsets = coords.mean(1) - coords.mean((0, 1))
    apart = offsets.T @ offsets / len(offsets)
    chol = torch.linalg.cholesky(
        apart + 1e-6 * float(apart.trace()) * torch.eye(len(apart), dtype=apart.dtype)
    )
    inv = torch.linalg.inv(chol)
    _, vecs = torch.linalg.eigh(inv @ spread @ inv.T)
    driving, _ = torch.linalg.qr(((inv.T @ vecs).T.flip(0)[:drive] @ basis).T)
    driving = driving.T  # (drive, D)
    c = x @ driving.T  # (K, n, drive)
    q = _quadratic(c)
    qc = (q - q.mean(1, keepdim=True)).reshape(-1, q.shape[-1])
    rest = x - c @ driving
    xc = (rest - rest.mean(1, keepdim=True)).reshape(-1, x.shape[-1])
    w = _ridge(qc, xc, ridge)  # (f, D), the frames' latents off the driving directions
    _, _, vh = torch.linalg.svd(qc @ w, full_matrices=False)
    w = w @ vh[:1].T @ vh[:1]

    def edit(s, i, j):
        s = s.double()
        change = path[j] - path[i]
        step = driving @ change
        own = _quadratic(s @ driving.T + step) - _quadratic(s @ driving.T)
        shared = (_quadratic(c[:, i] + step) - _quadratic(c[:, i])).mean(0)
        return s + change + (own - shared) @ w

    return edit


FACE_SETTINGS = (
    [("mean",)]
    + [
        ("regress", m, f, r)
        for m in (1, 2, 3)
        for f in ("linear", "quadratic")
        for r in (0.1, 1.0, 10.0, 100.0)
    ]
    + [("within", m, d, r) for m in (3, 4) for d in (1, 2) for r in (0.0, 1.0)]
)


def leave_one_out(gen, train, images, values, degree: int, setting: tuple, pairs) -> float:
    """Mean PSNR (dB), every training identity left out in turn: its inverted starts (K, n, D)
    edited by the lever fitted on the other identities, against its own true renders
    ``images`` (K, n, 3, R, R), over every pair (the benchmark's measure, on training faces)."""
    k = train.shape[0]
    jj = torch.tensor([p[1] for p in pairs])
    total = 0.0
    for f in range(k):
        edit = face_editor(torch.cat([train[:f], train[f + 1 :]]), values, degree, setting)
        edited = torch.stack([edit(train[f, i][None], i, j)[0] for i, j in pairs]).float()
        total += float(_psnr(gen, edited, images[f, jj]).mean())
    return total / k


def face_levers(gen, train, images, test, values, pairs, degree: int, score) -> dict:
    """Every setting of :data:`FACE_SETTINGS` scored on the held-out starts, with its
    leave-one-identity-out PSNR on the training faces (:func:`leave_one_out`); the row
    ``face (chosen)`` is the setting of the highest."""
    t = test.shape[0]
    out: dict = {}
    best = None
    for setting in FACE_SETTINGS:
        validated = leave_one_out(gen, train, images, values, degree, setting, pairs)
        edit = face_editor(train, values, degree, setting)
        edited = torch.empty(t * len(pairs), test.shape[-1], dtype=torch.float64)
        for p, (i, j) in enumerate(pairs):
            edited[p :: len(pairs)] = edit(test[:, i], i, j)
        name = "face " + " ".join(str(a) for a in setting)
        out[name] = {**score(edited.float()), "leave_one_out_psnr_db": round(validated, 3)}
        if best is None or validated > out[best]["leave_one_out_psnr_db"]:
            best = name
    out["face (chosen)"] = {**out[best], "setting": best}
    return out


def bend_rows(gen, factor: str, train, test, values, pairs, degree: int, score) -> dict:
    """References told the warp ``u -> u + sum_m k (p_m.u)^2 q`` (not levers: a learned edit
    does not know P, q or k). Each moves a start s by the smoothed mean change c_ij with its
    part along q replaced by ``-sum_m k_m [(p_m.(s + c_ij))^2 - (p_m.s)^2]``, the change that
    keeps the world's coordinate along q, from the start's own coordinates: ``bend given``
    with the warp's k, ``bend given, own axis`` with it on the edited factor's own bent axis
    only (the others' k_m = 0), ``bend axes given`` with k_m fitted on the training frames
    (least squares of q.x on every (p_m.x)^2, one intercept per face). {} without a warp."""
    warp = getattr(gen, "warp", None)
    if warp is None:
        return {}
    x = train.double()
    axes, into = warp.axes.double(), warp.into.double()
    path = centred_path(smooth_paths(x, values, degree))
    squares = (x @ axes.T).pow(2)
    along = x @ into
    fitted = torch.linalg.lstsq(
        (squares - squares.mean(1, keepdim=True)).reshape(-1, len(axes)),
        (along - along.mean(1, keepdim=True)).reshape(-1, 1),
    ).solution[:, 0]
    t = test.shape[0]
    out = {}
    given = torch.full((len(axes),), -warp.strength, dtype=torch.float64)
    own = (axes @ factor_axis(factor).double()).abs() > 0.99
    for name, strengths in (
        ("bend given", given),
        ("bend given, own axis", given * own),
        ("bend axes given", fitted),
    ):
        edited = torch.empty(t * len(pairs), test.shape[-1], dtype=torch.float64)
        for p, (i, j) in enumerate(pairs):
            s = test[:, i].double()
            change = path[j] - path[i]
            bent = ((s + change) @ axes.T).pow(2) - (s @ axes.T).pow(2)
            edited[p :: len(pairs)] = s + change - (change @ into) * into + (bent @ strengths)[:, None] * into
        out[name] = {**score(edited.float()), "strengths": [round(float(v), 3) for v in -strengths]}
    return out


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
