"""Training a learned edit (E, D) on sequences' latents; resumable bit for bit.

One step draws ``batch_size`` training pairs: a sequence set (weighted by its number of
sequences), two different sequences ``a`` and ``b`` of it (the same one when the set has
only one), and two steps ``i``, ``j`` (any, ``i = j`` included, so that "no change" is
learned too). With Gaussian noise of ``noise`` x the latents' scale added to the inputs
``a_i``, ``a_j``, ``b_i`` (against over-fitting a handful of sequences) it minimises

    lambda_a * |a_j - â_j|^2 + lambda_b * |b_j - b̂_j|^2   (mean over dimensions, / scale^2)

with ``Δ = E(a_i, a_j)``, ``â_j = a_i + D(a_i, Δ)``, ``b̂_j = b_i + D(b_i, Δ)``. The
``b`` term is what forces Δ to describe the change rather than the identity. With the
``both`` decoder, ``position_penalty`` x the mean squared size of its position-dependent
part (summed over the subspace, / D) is added, so that part is learned only where every
sequence asks for it.

Each step's draws come from a generator seeded by (seed, step) and the initial weights
from ``seed`` alone, so a run resumed from a checkpoint ends exactly where an
uninterrupted run ends. Checkpoints (``OUT/checkpoint/``) are safetensors + JSON.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tlgan.delta.model import DECODERS, DeltaModel, save_delta
from tlgan.delta.smooth import check_degree, choose_degree, smooth_paths
from tlgan.errors import TlganError
from tlgan.io import load_tensors, write_json
from tlgan.train.checkpoint import (
    STATE_FILE,
    checkpoint_dir,
    has_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from tlgan.train.common import cosine_lr, set_lr, settings_mismatch, step_generator

log = logging.getLogger(__name__)

STREAM_PAIRS = 21
STREAM_NOISE = 22
#: How the subspace is chosen: "path" (the least-squares line's direction, then the principal
#: directions of what it leaves of the mean path over sequences), "line" (the line, then the
#: principal directions of what it leaves of every sequence's change) or "pca" (the principal
#: directions of the change alone).
BASES = ("path", "line", "pca")

DEFAULTS = {
    "delta_dim": 8,
    "hidden": 256,
    "subspace": 8,
    "steps": 2000,
    "batch_size": 64,
    "lr": 1e-3,
    "noise": 0.05,
    "lambda_a": 1.0,
    "lambda_b": 1.0,
    "basis": "path",
    "decoder": "both",
    "position_penalty": 30.0,
    "path_degree": "auto",
}
#: Settings added after model folders were first written, with the value that reproduces
#: what those folders hold (the checkpoint check and the benchmark's folder names use it).
INTRODUCED = {"basis": "pca", "decoder": "position", "position_penalty": 0.0, "path_degree": 0}


def _check_sets(latent_sets: Sequence[torch.Tensor], value_sets: Sequence[Sequence[float]] | None):
    if not latent_sets:
        raise TlganError("no sequences to train on; give at least one sequence folder")
    sets, values = [], []
    shape = None
    for k, latents in enumerate(latent_sets):
        latents = torch.as_tensor(latents).float()
        if latents.ndim < 3 or latents.shape[1] < 2:
            raise TlganError(
                f"sequence set {k}: latents must be (K sequences, n >= 2 steps, *latent shape); got "
                f"shape {tuple(latents.shape)}"
            )
        if shape is None:
            shape = tuple(latents.shape[2:])
        elif tuple(latents.shape[2:]) != shape:
            raise TlganError(
                f"sequence set {k} has latents of shape {tuple(latents.shape[2:])}, the first set "
                f"{shape}; all sets must come from the same generator and space"
            )
        if not torch.isfinite(latents).all():
            raise TlganError(f"sequence set {k}: latents hold NaN or infinite values")
        v = (
            list(range(latents.shape[1]))
            if value_sets is None or value_sets[k] is None
            else list(value_sets[k])
        )
        if len(v) != latents.shape[1]:
            raise TlganError(f"sequence set {k}: {len(v)} factor values for {latents.shape[1]} steps")
        sets.append(latents.reshape(latents.shape[0], latents.shape[1], -1))
        values.append(torch.tensor([float(x) for x in v], dtype=torch.float64))
    return sets, values, shape


def linear_direction(latent_sets: Sequence[torch.Tensor], value_sets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Least-squares latent change per unit of factor, (D,): the best single straight line.

    Fits ``a_s(v) = c_s + v * d`` with one offset per sequence and one slope ``d`` shared by
    all; equivalently the pooled slope over every pair of steps of every sequence.
    """
    num, den = None, 0.0
    for latents, values in zip(latent_sets, value_sets, strict=True):
        x = latents.to(torch.float64).reshape(latents.shape[0], latents.shape[1], -1)
        dv = (values - values.mean()).to(torch.float64)
        centred = x - x.mean(dim=1, keepdim=True)
        term = torch.einsum("n,knd->d", dv, centred)
        num = term if num is None else num + term
        den += float(dv.pow(2).sum()) * x.shape[0]
    if den <= 0:
        raise TlganError("the factor values do not change along the sequences; no direction to fit")
    return (num / den).float()


def _rank(sets: list[torch.Tensor]) -> int:
    """Largest useful subspace: the number of independent within-sequence changes."""
    return sum(int(x.shape[0]) * (int(x.shape[1]) - 1) for x in sets)


def mean_path(sets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each set's mean path over its sequences, stacked: (sum of n over sets, D), float64.

    Step t's row is the mean over the K sequences of ``x[s, t] - mean_t x[s]``, scaled by
    sqrt(K) so a set counts by its number of sequences. Every sequence of a set shows the
    same change in the same steps, so what they share is the change and what they do not
    (an inversion's wander from image to image) shrinks like 1 / sqrt(K) in the mean.
    """
    rows = []
    for x in sets:
        centred = (x - x.mean(dim=1, keepdim=True)).to(torch.float64)
        rows.append(centred.mean(0) * math.sqrt(x.shape[0]))
    return torch.cat(rows)


#: Directions whose singular value is below this fraction of the largest are left out of a basis.
RANK_TOLERANCE = 1e-5


def change_basis(
    sets: Sequence[torch.Tensor],
    r: int,
    values: Sequence[torch.Tensor] | None = None,
    *,
    path: bool = False,
) -> torch.Tensor:
    """Up to r orthonormal directions (r', D), r' <= r, in which the sequences change.

    Each sequence is centred on its own mean, so only what changes along the sequences
    counts, not how identities differ. Without ``values``: the r leading principal
    directions of that change. With ``values`` (each set's factor values) the first
    direction is the least-squares line's (:func:`linear_direction`) and the others the
    principal directions of what the line leaves: of every sequence's change, or with
    ``path`` of the mean path over sequences (:func:`mean_path`). Inverted latents of one
    face wander between steps in directions the image barely depends on; on a few
    sequences that wander can outweigh the factor's own direction in a plain principal
    analysis, and the mean path keeps the change the sequences share while the wander
    averages out. Directions the data do not span (singular value under
    :data:`RANK_TOLERANCE` of the largest) are left out, so r' can be less than r.
    """
    centred = torch.cat([(x - x.mean(dim=1, keepdim=True)).reshape(-1, x.shape[-1]) for x in sets]).to(
        torch.float64
    )
    if values is None:
        _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
        keep = int((sv > RANK_TOLERANCE * sv[0].clamp_min(1e-30)).sum())
        basis = vh[: min(r, keep)]
    else:
        line = linear_direction(sets, values).to(torch.float64)
        line = line / line.norm().clamp_min(1e-12)
        data = mean_path(sets) if path else centred
        rest = data - (data @ line)[:, None] * line[None]
        _, sv, vh = torch.linalg.svd(rest, full_matrices=False)
        scale = max(float(centred.norm(dim=1).max()), 1e-30)
        keep = int((sv > RANK_TOLERANCE * scale).sum())
        basis = torch.cat([line[None], vh[: max(0, min(r - 1, keep))]])
        basis, _ = torch.linalg.qr(basis.T)  # re-orthonormalise against rounding
        basis = basis.T
    # Fix each direction's sign (the largest entry positive) so the basis depends on the data only.
    signs = torch.sign(basis.gather(1, basis.abs().argmax(1, keepdim=True)))
    return (basis * signs).float()


def _fingerprint(sets: list[torch.Tensor], values: list[torch.Tensor]) -> str:
    h = hashlib.sha256()
    for x, v in zip(sets, values, strict=True):
        h.update(str(tuple(x.shape)).encode())
        h.update(x.contiguous().numpy().tobytes())
        h.update(v.numpy().tobytes())
    return h.hexdigest()[:16]


def _draw(sets: list[torch.Tensor], batch_size: int, g: torch.Generator):
    """Indices of one batch: per row (set, a, b, i, j); returns stacked a_i, a_j, b_i, b_j (B, D)."""
    weights = torch.tensor([float(x.shape[0]) for x in sets])
    which = torch.multinomial(weights, batch_size, replacement=True, generator=g)
    a_i, a_j, b_i, b_j = [], [], [], []
    order = []
    for s, x in enumerate(sets):
        rows = (which == s).nonzero().flatten()
        m = len(rows)
        if m == 0:
            continue
        k, n = x.shape[:2]
        a = torch.randint(k, (m,), generator=g)
        if k > 1:
            b = (a + torch.randint(1, k, (m,), generator=g)) % k  # any other sequence
        else:
            b = a.clone()
        i = torch.randint(n, (m,), generator=g)
        j = torch.randint(n, (m,), generator=g)
        a_i.append(x[a, i]), a_j.append(x[a, j]), b_i.append(x[b, i]), b_j.append(x[b, j])
        order.append(rows)
    perm = torch.argsort(torch.cat(order))
    return [torch.cat(t)[perm] for t in (a_i, a_j, b_i, b_j)]


def fit_codes(
    model: DeltaModel, starts: torch.Tensor, ends: torch.Tensor, init: torch.Tensor, iterations: int = 200
) -> torch.Tensor:
    """Codes that best make the given changes with the networks fixed: (C, delta_dim).

    ``starts`` and ``ends`` (C, K, D) are K examples of each of C changes and ``init``
    (C, delta_dim) the codes to start from; each code c minimises
    ``sum_k |s_k + D(s_k, c) - e_k|^2`` (the codes are independent, so all are fitted at
    once). The mean of codes taken at different positions along a curved path is shorter
    than any of them; the fitted code is the one change that suits all of those positions.
    """
    c, k, d = starts.shape
    flat_s, flat_e = starts.reshape(-1, d), ends.reshape(-1, d)
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        code = init.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([code], lr=0.05)
        scale2 = float(model.scale) ** 2
        for _ in range(iterations):
            moved = model.move(flat_s, code.repeat_interleave(k, dim=0))
            loss = (moved - flat_e).pow(2).mean() / scale2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    return code.detach()


def step_codes(model: DeltaModel, latents: torch.Tensor, ii: torch.Tensor, jj: torch.Tensor) -> torch.Tensor:
    """For each requested change i -> j of ``ii``, ``jj`` (P,), the code that best makes a change of
    j - i steps from every training position that has one (:func:`fit_codes` over the starts
    i' of every sequence of ``latents`` (K, n, D) with i' + j - i a step): (P, delta_dim).

    Unlike the code fitted from step i alone, it does not depend on where the start is on
    the path, which an edit of a new face is not told.
    """
    n, d = latents.shape[1], latents.shape[-1]
    out = {}
    for step in sorted({int(j - i) for i, j in zip(ii.tolist(), jj.tolist(), strict=True)}):
        starts = [i for i in range(n) if 0 <= i + step < n]
        a = latents[:, starts].reshape(1, -1, d)
        b = latents[:, [i + step for i in starts]].reshape(1, -1, d)
        with torch.no_grad():
            init = model.encode(a[0], b[0]).mean(0, keepdim=True)
        out[step] = fit_codes(model, a, b, init)[0]
    return torch.stack([out[int(j - i)] for i, j in zip(ii.tolist(), jj.tolist(), strict=True)])


def _reference(
    model: DeltaModel, sets: list[torch.Tensor], values: list[torch.Tensor], iterations: int = 200
):
    """The one code that best makes one step from every training position, and its factor change.

    :func:`fit_codes` over every consecutive step, from the mean code of those steps.
    """
    starts = torch.cat([x[:, :-1].reshape(-1, x.shape[-1]) for x in sets])
    ends = torch.cat([x[:, 1:].reshape(-1, x.shape[-1]) for x in sets])
    steps = torch.cat([(v[1:] - v[:-1]).repeat(x.shape[0]) for x, v in zip(sets, values, strict=True)])
    with torch.no_grad():
        init = model.encode(starts, ends).mean(0)
    code = fit_codes(model, starts[None], ends[None], init[None], iterations)[0]
    return code, float(steps.mean())


def _step_table(model: DeltaModel, sets: list[torch.Tensor]) -> dict[str, list]:
    """For s = ±1 .. ±(n - 1) steps, the code that best makes a change of s steps from every
    training position that has one, over all sets (:func:`fit_codes`): ``{"steps": [s, ...],
    "codes": [[...], ...]}``, what :meth:`DeltaModel.alpha_codes` interpolates."""
    longest = max(int(x.shape[1]) for x in sets)
    steps, codes = [], []
    for step in [s for s in range(-(longest - 1), longest) if s != 0]:
        pairs = [(x, i) for x in sets for i in range(x.shape[1]) if 0 <= i + step < x.shape[1]]
        a = torch.cat([x[:, i] for x, i in pairs])[None]
        b = torch.cat([x[:, i + step] for x, i in pairs])[None]
        with torch.no_grad():
            init = model.encode(a[0], b[0]).mean(0, keepdim=True)
        steps.append(step)
        codes.append([float(v) for v in fit_codes(model, a, b, init)[0]])
    return {"steps": steps, "codes": codes}


def train_delta(
    latent_sets: Sequence[torch.Tensor],
    out_dir,
    *,
    values: Sequence[Sequence[float]] | None = None,
    factor: str | None = None,
    space: str = "z",
    generator: str | None = None,
    steps: int = DEFAULTS["steps"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    delta_dim: int = DEFAULTS["delta_dim"],
    hidden: int = DEFAULTS["hidden"],
    subspace: int = DEFAULTS["subspace"],
    noise: float = DEFAULTS["noise"],
    lambda_a: float = DEFAULTS["lambda_a"],
    lambda_b: float = DEFAULTS["lambda_b"],
    basis: str = DEFAULTS["basis"],
    decoder: str = DEFAULTS["decoder"],
    position_penalty: float = DEFAULTS["position_penalty"],
    path_degree: int | str = DEFAULTS["path_degree"],
    seed: int = 0,
    checkpoint_every: int = 500,
    resume: bool = False,
    progress: bool = True,
    info: dict[str, Any] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> DeltaModel:
    """Train E and D on ``latent_sets`` (each (K, n, *latent shape): K sequences of n steps)
    and save the model to ``out_dir`` (model.json + model.safetensors, training.json).

    ``values`` gives each set's factor value per step (default 0, 1, ...). ``factor``,
    ``space``, ``generator`` and ``info`` are recorded in the model. ``resume`` continues
    ``out_dir/checkpoint/`` (refused if any setting or the data differ); without it an
    existing checkpoint is an error, so nothing is overwritten by accident. ``on_step(step)``
    is called after each completed step. Returns the trained model (eval mode).

    ``path_degree`` p > 0 (or ``"auto"``) replaces each set's mean path over sequences by its
    polynomial of degree p in the factor values before training (:mod:`tlgan.delta.smooth`;
    the degree used per set is kept in ``info["path_degrees"]``, and code fitting on the
    training latents should smooth them alike); 0 trains on the latents as they are.
    """
    if steps < 1 or batch_size < 1:
        raise TlganError(f"steps and batch_size must be at least 1 (got {steps}, {batch_size})")
    for name, value in (
        ("noise", noise),
        ("lambda_a", lambda_a),
        ("lambda_b", lambda_b),
        ("lr", lr),
        ("position_penalty", position_penalty),
    ):
        if not math.isfinite(float(value)) or float(value) < 0:
            raise TlganError(f"{name} must be a finite number >= 0, not {value}")
    if basis not in BASES:
        raise TlganError(f"basis must be one of {', '.join(BASES)}, not {basis!r}")
    if decoder not in DECODERS:
        raise TlganError(f"decoder must be one of {', '.join(DECODERS)}, not {decoder!r}")
    path_degree = check_degree(path_degree)
    sets, value_sets, shape = _check_sets(latent_sets, values)
    degrees: list[int] = []
    if path_degree != 0:
        degrees = [
            choose_degree(x, v) if path_degree == "auto" else int(path_degree)
            for x, v in zip(sets, value_sets, strict=True)
        ]
        sets = [smooth_paths(x, v, p) for x, v, p in zip(sets, value_sets, degrees, strict=True)]
    # Of the data trained on: a checkpoint of other smoothing (another degree chosen) is refused.
    data_fingerprint = _fingerprint(sets, value_sets)
    out_dir = Path(out_dir)
    settings = {
        "steps": int(steps),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "delta_dim": int(delta_dim),
        "hidden": int(hidden),
        "subspace": int(subspace),
        "noise": float(noise),
        "lambda_a": float(lambda_a),
        "lambda_b": float(lambda_b),
        "basis": str(basis),
        "decoder": str(decoder),
        "position_penalty": float(position_penalty),
        "path_degree": path_degree,
        "seed": int(seed),
        "data": data_fingerprint,
    }
    width = min(int(subspace), _rank(sets), int(torch.tensor(shape).prod()))
    directions = None
    if width:
        directions = change_basis(sets, width, None if basis == "pca" else value_sets, path=basis == "path")
        width = len(directions)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # initial weights depend on the seed only
        model = DeltaModel(shape, delta_dim=delta_dim, hidden=hidden, subspace=width, decoder=decoder)
    everything = torch.cat([x.reshape(-1, x.shape[-1]) for x in sets])
    model.center.copy_(everything.mean(0))
    model.scale.copy_((everything - everything.mean(0)).pow(2).mean().sqrt().clamp_min(1e-8))
    if directions is not None:
        model.basis.copy_(directions)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start, history = 0, []
    if has_checkpoint(out_dir):
        if not resume:
            raise TlganError(
                f"{out_dir} holds a training checkpoint; pass --resume (resume=True) to continue it, or "
                f"use a new --out folder"
            )
        # Settings first, so a checkpoint of other settings is refused by name rather than by
        # the network shapes they lead to. Checkpoints from before these were settings used the
        # plain principal directions and the position-dependent decoder alone.
        _, saved = load_tensors(checkpoint_dir(out_dir) / STATE_FILE)
        diff = settings_mismatch(
            (saved.get("info") or {}).get("settings", {}),
            settings,
            introduced=INTRODUCED,
        )
        if diff:
            raise TlganError(
                f"{out_dir}: the checkpoint was written with other settings ({'; '.join(diff)}); "
                f"pass the same ones, or train into a new --out folder"
            )
        manifest = restore_checkpoint(
            out_dir, modules={"delta": model}, optimizers={"adam": opt}, restore_rng=False
        )
        start, history = int(manifest["step"]), list(manifest["info"].get("history", []))
        log.info("resuming learned-edit training at step %d of %d", start, steps)
    elif resume:
        log.info("no checkpoint in %s; starting from step 0", out_dir)
    warmup = min(100, steps // 10)
    scale2 = float(model.scale) ** 2
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(
        range(start, steps),
        desc="training learned edit",
        unit="step",
        initial=start,
        total=steps,
        disable=None if progress else True,
    )
    log_every = max(1, steps // 100)
    for step in bar:
        set_lr(opt, cosine_lr(step, steps, lr, warmup=warmup))
        a_i, a_j, b_i, b_j = _draw(sets, batch_size, step_generator(seed, step, STREAM_PAIRS))
        if noise > 0:
            g = step_generator(seed, step, STREAM_NOISE)
            sigma = noise * float(model.scale)
            a_i_in = a_i + sigma * torch.randn(a_i.shape, generator=g)
            a_j_in = a_j + sigma * torch.randn(a_j.shape, generator=g)
            b_i_in = b_i + sigma * torch.randn(b_i.shape, generator=g)
        else:
            a_i_in, a_j_in, b_i_in = a_i, a_j, b_i
        delta = model.encode(a_i_in, a_j_in)
        shared_a, position_a = model.residuals(a_i_in, delta)
        shared_b, position_b = model.residuals(b_i_in, delta)
        a_hat = a_i_in + model._residual(shared_a if position_a is None else shared_a + position_a)
        b_hat = b_i_in + model._residual(shared_b if position_b is None else shared_b + position_b)
        loss_a = (a_hat - a_j).pow(2).mean() / scale2
        loss_b = (b_hat - b_j).pow(2).mean() / scale2
        loss = lambda_a * loss_a + lambda_b * loss_b
        if decoder == "both" and position_penalty > 0:
            # What depends on the position is learned only where every sequence asks for it:
            # on a few noisy sequences it would otherwise fit their wander.
            # (Summed over the networks' coordinates and divided by D, as the reconstruction terms.)
            size = position_a.pow(2).sum(1).mean() + position_b.pow(2).sum(1).mean()
            loss = loss + position_penalty * 0.5 * size / model.dim
        if not math.isfinite(loss.item()):
            raise TlganError(f"training diverged at step {step + 1} (loss {loss.item()}); lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            record = {"step": step + 1, "loss_a": round(loss_a.item(), 6), "loss_b": round(loss_b.item(), 6)}
            history.append(record)
            bar.set_postfix(loss_a=f"{record['loss_a']:.4f}", loss_b=f"{record['loss_b']:.4f}")
        if (step + 1) % max(1, checkpoint_every) == 0 and step + 1 < steps:
            save_checkpoint(
                out_dir,
                step=step + 1,
                modules={"delta": model},
                optimizers={"adam": opt},
                info={"settings": settings, "history": history},
            )
        if on_step is not None:
            on_step(step + 1)
    bar.close()
    model.eval()
    reference, unit = _reference(model, sets, value_sets)
    model.reference_delta.copy_(reference)
    table = _step_table(model, sets)
    model.linear_direction.copy_(linear_direction(sets, value_sets))
    summary = {
        "resumed_from": start,
        "seconds": round(time.perf_counter() - t0, 2),
        "final": history[-1] if history else {},
    }
    model.info = {
        "factor": factor,
        "unit": unit,
        "values": [v.tolist() for v in value_sets],
        "space": space,
        "generator": generator,
        "sequences": [int(x.shape[0]) for x in sets],
        "training": {**settings, **summary},
        **({"path_degrees": degrees} if degrees else {}),
        "step_codes": table,
        **(info or {}),
    }
    save_delta(model, out_dir)
    save_checkpoint(
        out_dir,
        step=steps,
        modules={"delta": model},
        optimizers={"adam": opt},
        info={"settings": settings, "history": history},
    )
    write_json(out_dir / "training.json", {"settings": settings, "summary": summary, "history": history})
    log.info("learned edit saved to %s (%s, %d steps)", out_dir, factor or "unnamed factor", steps)
    return model


__all__ = [
    "train_delta",
    "linear_direction",
    "fit_codes",
    "step_codes",
    "change_basis",
    "mean_path",
    "DEFAULTS",
    "INTRODUCED",
    "BASES",
]
