"""Measuring learned edits against the truth of the toyfaces world.

For each factor, sequences of training identities (seed ``seed``) and of identities never
used in training (seed ``seed + 1``) are rendered and inverted into the generator. For every
held-out identity and every pair of steps (i, j), i != j, its inverted latent ``b_i`` is
edited by the change i -> j and the edited image is compared with the renderer's true image
of that identity at step j:

- *learned*: ``b_i + D(b_i, Δ_ij)`` with ``Δ_ij`` the code that best makes the change
  i -> j from every training sequence's step i (:func:`tlgan.delta.train.fit_codes`,
  started from the mean of ``E(a_i, a_j)`` over the training sequences; ``codes="mean"``
  keeps that mean, the parent method's choice; for a model trained on a smoothed path,
  ``--path-degree``, the training latents are smoothed alike first);
- *learned, read*: the same with the start's step read from its latent (the nearest step of
  the training sequences in the model's subspace) instead of told;
- *learned, steps*: the same with the code of a change of j - i steps fitted from every
  training position (:func:`tlgan.delta.train.step_codes`): not told where the start is;
- *learned, alpha*: ``b_i + D(b_i, α Δ_ref)``, the model's one-step reference code
  scaled by ``α = (v_j - v_i) / unit``: the edit as ``tlgan delta edit --alpha`` applies it;
- *linear*: ``b_i + (v_j - v_i) d`` with ``d`` the least-squares latent change per unit of
  factor over the same training sequences (:func:`tlgan.delta.train.linear_direction`);
- *axis* (for factors a classifier attribute drives, e.g. smile -> Smiling): the
  generator's attribute axis, moved by the least-squares amount per unit of factor fitted
  on the training sequences' projections;
- for scale: *no edit* (``b_i`` itself) and the *inversion* of the target (``b_j``), the
  ceiling that any edit of these latents is held to by the generator.

Reported per method: PSNR (dB) against the true target, the classifier's mean absolute
change in the probabilities of the attributes that should not change, and (for generators
that share the world's latent space, such as ``toyfaces-gan``, or see it through a known
warp) the mean change of the world's identity factors read from the edited latent, plus
the error in the edited factor.

Beside ``gain_db`` (learned minus linear) each entry gives ``headroom_db``: the inversion
ceiling minus the linear edit, the most any edit of these latents could gain over the line.
Where it is under :data:`TARGET_GAIN_DB` (``target_above_ceiling``), a gain of that size is
out of reach whatever the edit; on ``toyfaces-gan`` in z most factors move along straight
lines of the latent by construction, so the line is close to the truth there. ``warp``
(see :mod:`tlgan.delta.warp`) measures the same through a known curved warp instead.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlgan.delta.model import DeltaModel
from tlgan.delta.report import edit_grid
from tlgan.delta.sequences import read_sequences, sequence_latents, write_sequences
from tlgan.delta.train import fit_codes, linear_direction, step_codes, train_delta
from tlgan.delta.truth import reference_edits
from tlgan.errors import TlganError
from tlgan.inversion.encoder import psnr_db
from tlgan.toyfaces import world
from tlgan.toyfaces.sequences import factor_name, factor_sequences

log = logging.getLogger(__name__)

DEFAULT_FACTORS = ("yaw", "light_angle", "smile", "age")
# Attribute whose classifier output a factor is meant to change (it is not counted as off-target).
ATTRIBUTE_OF = {factor: attribute for attribute, factor in world.FACTOR_OF.items()}
# Identity factors and the span they are divided by, so every factor counts on a 0..1 scale.
IDENTITY_SPANS = {world.FACTOR_OF[a]: 1.0 for a in world.ATTRIBUTES}
IDENTITY_SPANS.update(age=2 * world.AGE_SPAN, nose_size=world.NOSE_SPAN)
#: The gain over the line the benchmark asks of a learned edit (dB).
TARGET_GAIN_DB = 1.0
#: How the learned edit's code of each requested change is chosen (see evaluate_edit_methods).
CODES = ("mean", "fit")
#: The gain (dB) on the left-out training faces above which the learned edit is held.
HOLD_MIN_GAIN_DB = 0.01


def _sequence_latents(
    factor: str,
    identities: int,
    steps: int,
    seed: int,
    generator,
    folder: Path,
    inversion_steps: int,
    progress: bool,
    encoder="auto",
    patience: int | None = None,
):
    """Render (or reuse) and invert a sequence folder; returns (true images, latents, values)."""
    seqs = factor_sequences(factor, identities, steps, seed=seed)
    names = [f"id{int(i):04d}" for i in seqs.indices]
    existing = None
    if (folder / "sequences.json").is_file():
        try:
            existing = read_sequences(folder)
        except TlganError:
            existing = None
    if existing is None or existing.names != names or existing.values != seqs.values.tolist():
        existing = write_sequences(
            folder,
            seqs.images,
            values=seqs.values.tolist(),
            factor=seqs.factor,
            names=names,
            extra={"source": "toyfaces-render", "seed": seed},
        )
    latents = sequence_latents(
        existing, generator, steps=inversion_steps, patience=patience, encoder=encoder, progress=progress
    )
    return seqs, latents


def _psnr(generator, latents: torch.Tensor, targets: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for s in range(0, len(latents), batch_size):
            out.append(
                psnr_db(
                    generator.synthesize(latents[s : s + batch_size]).float().cpu(),
                    targets[s : s + batch_size],
                )
            )
    return torch.cat(out)


def _probabilities(generator, classifier, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for s in range(0, len(latents), batch_size):
            out.append(
                classifier.probabilities(generator.synthesize(latents[s : s + batch_size])).float().cpu()
            )
    return torch.cat(out)


def _factor_error(factor: str, got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    diff = got - want
    if factor in ("light_angle",):
        diff = torch.remainder(diff + 180.0, 360.0) - 180.0
    elif factor == "background_hue":
        diff = torch.remainder(diff + 0.5, 1.0) - 0.5
    return diff.abs()


def _world_latents(generator, latents: torch.Tensor) -> torch.Tensor | None:
    """The world latents (N, 512) a generator draws for ``latents``, or None when unknown."""
    if callable(getattr(generator, "to_world", None)):  # seen through a known warp
        with torch.no_grad():
            return generator.to_world(latents).float().cpu()
    return latents if world.shares_world_latents(generator) else None


def ceiling_summary(entry: dict[str, Any], target_db: float = TARGET_GAIN_DB) -> dict[str, Any]:
    """``headroom_db`` (inversion ceiling minus linear), ``target_above_ceiling`` (whether a gain
    of ``target_db`` over the line is more than the ceiling allows) and ``headroom_used``
    (gain / headroom, None without headroom) of one evaluated entry."""
    headroom = round(entry["inversion"]["psnr_db"] - entry["linear"]["psnr_db"], 3)
    return {
        "headroom_db": headroom,
        "target_gain_db": float(target_db),
        "target_above_ceiling": bool(headroom < target_db),
        "headroom_used": round(entry["gain_db"] / headroom, 3) if headroom > 0 else None,
    }


def _axis_direction(axes, attribute: str) -> torch.Tensor | None:
    """Unit axis of ``attribute`` from a FeatureAxes (None when absent)."""
    if axes is None or attribute not in axes.attributes:
        return None
    v = axes[attribute].float().reshape(-1)
    return v / v.norm()


def evaluate_edit_methods(
    generator,
    classifier,
    *,
    factor: str,
    train_latents: torch.Tensor,
    values: np.ndarray,
    test_latents: torch.Tensor,
    test_images: torch.Tensor,
    model: DeltaModel,
    axis: torch.Tensor | None = None,
    codes: str = "fit",
    train_world: torch.Tensor | None = None,
    hold: tuple[Any, list[str], dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Score learned, linear (and axis) edits of held-out latents against the true targets.

    ``train_latents`` (K, n, D) and ``test_latents`` (T, n, D) are inverted sequences with
    factor ``values`` (n,); ``test_images`` (T, n, 3, R, R) are the true renders. ``codes``:
    each pair's Δ_ij is the ``"mean"`` of E over the training sequences, or the code
    ``"fit"`` to make that change from every training sequence's position
    (:func:`tlgan.delta.train.fit_codes`, started from the mean).

    Where the generator's latent is the toyfaces world's (or a known warp of it), two
    references of the truth are scored as well (:mod:`tlgan.delta.truth`): ``exact``, the
    world's own change of each held-out start (what a perfect edit of that start does), and,
    given the training identities' world latents ``train_world`` (K, 512), ``exact_mean``, the
    mean change of their noise-free sequences added to every start (the best edit that is the
    same for every face, learned from perfect inversions).

    ``hold`` (the generator's FeatureAxes, the attributes to hold, :func:`choose_hold`'s result,
    a dict kept across training seeds) adds ``learned_held``, ``learned_steps_held`` and
    ``linear_held``: those edits with the held attributes' classifier readings brought back
    towards the start's (:func:`tlgan.editing.hold.hold_attributes`), and ``learned_chosen``:
    the learned edit held or not, as the training faces chose.
    """
    if codes not in CODES:
        raise TlganError(f"codes must be one of {', '.join(CODES)}, not {codes!r}")
    line_latents = train_latents
    train_latents = _code_latents(model, train_latents, values)  # the learned edit's view of them
    t, n = test_latents.shape[:2]
    d = test_latents.shape[-1]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    ii = torch.tensor([p[0] for p in pairs])
    jj = torch.tensor([p[1] for p in pairs])
    vals = torch.as_tensor(values, dtype=torch.float32)
    with torch.no_grad():
        k = train_latents.shape[0]
        pair_codes = model.encode(train_latents[:, ii].reshape(-1, d), train_latents[:, jj].reshape(-1, d))
        pair_codes = pair_codes.reshape(k, len(pairs), -1).mean(0)  # Δ_ij, (P, delta_dim)
        start = test_latents[:, ii].reshape(-1, d)  # (T*P, D)
        target_images = test_images[:, jj].flatten(0, 1)
        steps = (vals[jj] - vals[ii]).repeat(t)[:, None]  # (T*P, 1)
        direction = linear_direction([line_latents], [torch.as_tensor(values, dtype=torch.float64)])
    if codes == "fit":
        pair_codes = fit_codes(
            model,
            train_latents[:, ii].transpose(0, 1).reshape(len(pairs), k, d),
            train_latents[:, jj].transpose(0, 1).reshape(len(pairs), k, d),
            pair_codes,
        )
    agnostic = step_codes(model, train_latents, ii, jj)
    read_codes, read_error = _read_codes(model, train_latents, test_latents, pairs, pair_codes, agnostic)
    with torch.no_grad():
        edits = {
            "learned": model.move(start, pair_codes.repeat(t, 1)),
            "learned_read": model.move(start, read_codes),
            "learned_steps": model.move(start, agnostic.repeat(t, 1)),
            # As `tlgan delta edit --alpha` applies it: alpha one-step reference codes.
            "learned_alpha": model.move(
                start, model.alpha_codes(steps[:, 0] / float(model.info.get("unit") or 1.0))
            ),
            "linear": start + steps * direction[None],
        }
        if axis is not None:
            proj = line_latents @ axis  # (K, n)
            slope = linear_direction([proj[..., None]], [torch.as_tensor(values, dtype=torch.float64)])
            edits["axis"] = start + steps * float(slope) * axis[None]
        edits["no_edit"] = start
        edits["inversion"] = test_latents[:, jj].reshape(-1, d)
    if hold is not None:
        from tlgan.editing.hold import hold_attributes

        hold_axes, held, chosen, memo = hold
        for name in ("learned", "learned_steps", "linear"):
            if name == "linear" and "linear_held" in memo:  # the line does not depend on the seed
                edits["linear_held"] = memo["linear_held"]
                continue
            edits[f"{name}_held"] = hold_attributes(
                generator, classifier, start, edits[name], hold_axes, held
            )
        memo["linear_held"] = edits["linear_held"]
        edits["learned_chosen"] = edits["learned_held"] if chosen["hold"] else edits["learned"]
    edits.update(reference_edits(generator, factor, start, vals[jj].repeat(t), train_world, values, (ii, jj)))
    attribute = ATTRIBUTE_OF.get(factor)
    keep = [a for a in classifier.attributes if a != attribute] if classifier is not None else []
    keep_idx = [list(classifier.attributes).index(a) for a in keep]
    base_probs = _probabilities(generator, classifier, start)[:, keep_idx] if classifier is not None else None
    start_world = _world_latents(generator, start)
    world_ok = start_world is not None
    if world_ok:
        id_names = [name for name in IDENTITY_SPANS if name != factor]
        f0 = world.factors(start_world)
        want = vals[jj].repeat(t)
    out: dict[str, Any] = {"pairs": len(pairs) * t}
    for method, latents in edits.items():
        row: dict[str, Any] = {"psnr_db": round(float(_psnr(generator, latents, target_images).mean()), 3)}
        if classifier is not None:
            probs = _probabilities(generator, classifier, latents)[:, keep_idx]
            row["off_target_classifier"] = round(float((probs - base_probs).abs().mean()), 4)
        if world_ok:
            f1 = world.factors(_world_latents(generator, latents))
            change = torch.stack([(f1[name] - f0[name]).abs() / IDENTITY_SPANS[name] for name in id_names])
            row["off_target_identity"] = round(float(change.mean()), 4)
            row["factor_error"] = round(float(_factor_error(factor, f1[factor], want).mean()), 3)
        out[method] = row
    out["learned_read"]["start_step_error"] = read_error
    if hold is not None:
        out["hold_choice"] = dict(hold[2])
    if classifier is not None:
        # The renderer's own change between the two steps, read by the same classifier: what a
        # perfect edit would change in the attributes that are meant to stay (a light that turns
        # also moves a classifier's reading of some of them).
        with torch.no_grad():
            before = classifier.probabilities(test_images[:, ii].flatten(0, 1)).float().cpu()[:, keep_idx]
            after = classifier.probabilities(target_images).float().cpu()[:, keep_idx]
        out["true_change"] = {"off_target_classifier": round(float((after - before).abs().mean()), 4)}
    out["gain_db"] = round(out["learned"]["psnr_db"] - out["linear"]["psnr_db"], 3)
    out.update(ceiling_summary(out))
    out.update(_held_summary(out))
    return out


def _held_summary(entry: dict[str, Any]) -> dict[str, Any]:
    """``held_gain_db`` (learned, held, minus the line) and ``held_headroom_used`` (that gain over
    the headroom), or {} without the held rows."""
    if "learned_held" not in entry:
        return {}
    gain = round(entry["learned_held"]["psnr_db"] - entry["linear"]["psnr_db"], 3)
    headroom = entry.get("headroom_db")
    return {
        "held_gain_db": gain,
        "held_headroom_used": round(gain / headroom, 3) if headroom and headroom > 0 else None,
    }


def choose_hold(generator, classifier, train_latents, values, images, hold_axes, held, degree: int) -> dict:
    """Whether holding ``held`` helps the learned edit, judged on the training faces alone.

    Each training identity of ``train_latents`` (K, n, D) in turn is edited, for every ordered
    pair of steps, by the other identities' mean change along their path smoothed to
    ``degree`` (what the learned edit learns), held and not, and both are scored against its
    own true renders ``images`` (K, n, 3, R, R). Returns ``loo_psnr_db``, ``loo_psnr_held_db``
    and ``hold`` (whether the held edits scored higher by more than :data:`HOLD_MIN_GAIN_DB`);
    with one identity there is nothing to leave out and ``hold`` is False."""
    from tlgan.delta.smooth import smooth_paths
    from tlgan.editing.hold import hold_attributes

    k, n, d = train_latents.shape
    if k < 2:
        return {"loo_psnr_db": None, "loo_psnr_held_db": None, "hold": False}
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    ii, jj = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    x = train_latents.float()
    edited = []
    for f in range(k):
        rest = smooth_paths(torch.cat([x[:f], x[f + 1 :]]), values, degree).double()
        path = (rest - rest.mean(1, keepdim=True)).mean(0)
        edited.append(x[f, ii] + (path[jj] - path[ii]).float())
    edited = torch.cat(edited)
    starts = x[:, ii].reshape(-1, d)
    targets = images[:, jj].flatten(0, 1)
    plain = float(_psnr(generator, edited, targets).mean())
    kept = float(
        _psnr(
            generator, hold_attributes(generator, classifier, starts, edited, hold_axes, held), targets
        ).mean()
    )
    return {
        "loo_psnr_db": round(plain, 3),
        "loo_psnr_held_db": round(kept, 3),
        "hold": kept > plain + HOLD_MIN_GAIN_DB,
    }


def hold_axes_for(generator, classifier, work: Path, n: int = 20_000, progress: bool = True):
    """Feature axes of ``generator`` (e.g. a warped one, which has no cached axes) for holding
    attributes: ``n`` samples labelled by ``classifier`` and the z space's default finder, kept
    in ``work`` (``hold-axes-CLASSIFIER-N.safetensors`` and its sampling run) so a rerun reuses
    them."""
    from tlgan.axes.feature_axes import FeatureAxes
    from tlgan.pipeline import sample_and_fit_axes

    tag = str(getattr(classifier, "name", "classifier")).replace("/", "_").replace(":", "-")
    path = work / f"hold-axes-{tag}-{int(n)}.safetensors"  # other classifiers, other axes
    if path.is_file():
        return FeatureAxes.load(path)
    work.mkdir(parents=True, exist_ok=True)
    log.info("fitting the axes of %s to hold attributes by: %d samples (kept in %s)", generator.name, n, work)
    return sample_and_fit_axes(generator, classifier, path, n=n, progress=progress)


def _read_codes(model, train_latents, test_latents, pairs, pair_codes, agnostic):
    """The learned edit told only the requested number of steps: each start's step read from
    its latent (:func:`tlgan.delta.edit.read_steps`), then the code of the change from the read
    step (the step-count code where the read step leaves the path). Returns the codes
    (T*P, delta_dim) and the mean error of the read step, in steps."""
    from tlgan.delta.edit import read_steps

    t, n = test_latents.shape[:2]
    read = read_steps(model, train_latents, test_latents.reshape(t * n, -1)).reshape(t, n)
    index = {pair: p for p, pair in enumerate(pairs)}
    codes = []
    for s in range(t):
        for p, (i, j) in enumerate(pairs):
            a = int(read[s, i])
            codes.append(pair_codes[index[(a, a + j - i)]] if 0 <= a + j - i < n else agnostic[p])
    error = (read - torch.arange(n)[None]).abs().float().mean()
    return torch.stack(codes), round(float(error), 4)


def sequence_wander(latents: torch.Tensor) -> dict[str, float]:
    """How much inverted sequences (K, n, *latent shape) move between steps, and how much of it
    they share.

    ``step_norm``: the mean latent distance between consecutive steps of one sequence;
    ``shared_step_norm``: the same along the mean path over the sequences (what every
    sequence does, centred on its own mean); ``wander``: the root mean square distance of
    each sequence's centred latents from that mean path, the part of the movement that is
    the sequence's own (inversion noise, for sequences that show one change).
    """
    x = torch.as_tensor(latents).float()
    x = x.reshape(x.shape[0], x.shape[1], -1)
    centred = x - x.mean(dim=1, keepdim=True)
    path = centred.mean(0)
    return {
        "step_norm": round(float((x[:, 1:] - x[:, :-1]).norm(dim=-1).mean()), 3),
        "shared_step_norm": round(float((path[1:] - path[:-1]).norm(dim=-1).mean()), 3),
        "wander": round(float((centred - path).norm(dim=-1).pow(2).mean().sqrt()), 3),
    }


def _mean_over_seeds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry from per-training-seed entries of :func:`evaluate_edit_methods`: the learned
    edit's figures are the mean over the seeds, with ``spread`` (their standard deviation,
    0 for one seed) and ``by_seed`` (each seed's value); the baselines do not depend on the
    training seed and are kept from the first run."""
    out = {key: value for key, value in runs[0].items()}
    for row in (r for r in LEARNED_ROWS if r in runs[0]):
        learned: dict[str, Any] = {}
        for name in runs[0][row]:
            values = np.array([r[row][name] for r in runs], dtype=np.float64)
            learned[name] = round(float(values.mean()), 4)
            learned.setdefault("spread", {})[name] = round(
                float(values.std(ddof=1)) if len(values) > 1 else 0.0, 4
            )
            learned.setdefault("by_seed", {})[name] = [round(float(v), 4) for v in values]
        out[row] = learned
    gains = np.array([r["gain_db"] for r in runs], dtype=np.float64)
    out["gain_db"] = round(float(gains.mean()), 3)
    out["gain_db_spread"] = round(float(gains.std(ddof=1)) if len(gains) > 1 else 0.0, 3)
    out["gain_db_by_seed"] = [round(float(g), 3) for g in gains]
    out.update(ceiling_summary(out))
    out.update(_held_summary(out))
    return out


_KEY_INTRODUCED = {"path_degree": 0}
#: Rows that depend on the training seed (averaged over seeds); the others are baselines.
LEARNED_ROWS = (
    "learned",
    "learned_read",
    "learned_steps",
    "learned_alpha",
    "learned_held",
    "learned_steps_held",
    "learned_chosen",
)


def _code_latents(model: DeltaModel, latents: torch.Tensor, values) -> torch.Tensor:
    """The training latents (K, n, D) as the model was trained on them: with their mean path
    smoothed when it was trained so (``info["path_degrees"]``), else as they are."""
    from tlgan.delta.smooth import smooth_paths

    degrees = model.info.get("path_degrees") or []
    return smooth_paths(latents, values, int(degrees[0])) if degrees else latents


def _train_key(train_kwargs: dict[str, Any]) -> str:
    """A short digest of the training settings, so models trained otherwise are kept apart."""
    import hashlib
    import json

    from tlgan.delta.train import DEFAULTS

    settings = {**DEFAULTS, **train_kwargs}
    # Settings added since these names were first made leave them unchanged at their old value,
    # so model folders trained before keep their names (and are reused).
    for name, old in _KEY_INTRODUCED.items():
        if settings.get(name) == old:
            settings.pop(name)
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]


def evaluate_delta(
    generator,
    classifier=None,
    *,
    factors: Sequence[str] = DEFAULT_FACTORS,
    train_identities: Sequence[int] = (1, 2, 5, 10),
    test_identities: int = 5,
    steps: int = 7,
    seed: int = 0,
    inversion_steps: int = 100,
    inversion_patience: int | None = None,
    axes=None,
    work_dir=None,
    train_kwargs: dict | None = None,
    grid_dir=None,
    warp: str | None = None,
    codes: str = "fit",
    train_seeds: Sequence[int] = (0,),
    joint_rank: int = 0,
    joint_steps: int = 200,
    hold: bool = False,
    hold_samples: int = 20_000,
    progress: bool = True,
) -> dict[str, Any]:
    """The learned-edit benchmark (module docstring); returns a JSON-able dict.

    Each learned edit is trained once per seed of ``train_seeds`` (initial weights, pairs,
    noise); its figures are the mean over those runs, with their spread and each run's
    value (see :func:`_mean_over_seeds`). ``seed`` chooses the identities. ``joint_rank`` r > 0
    inverts the training sequences jointly (:func:`tlgan.delta.joint.joint_invert`: one latent
    per identity plus an r-dimensional path they share, ``joint_steps`` steps from the
    per-image inversions) before the learned edit and the line are fitted on them; the
    held-out faces stay inverted one image at a time, as a photo to edit is.

    ``work_dir`` keeps the rendered sequences, their inversions and the models, so a rerun
    with the same settings skips the inversions (the slow part: about 0.7 s per image on a
    CPU core at 100 steps). ``inversion_patience`` (default: the inversion's own) set large
    runs all ``inversion_steps``. ``axes`` (a FeatureAxes of the generator, e.g. ``tlgan
    fit``'s) adds the axis baseline for factors an attribute drives. ``grid_dir`` receives
    one edit grid PNG per factor (``grid-FACTOR.png``). ``warp`` (e.g. ``"bend:0.3"``, see
    :func:`tlgan.delta.warp.parse_warp`) evaluates through a known curved warp of the
    latent instead: a synthetic check, whose numbers are not the generator's own (the
    axis baseline, fitted on the unwarped generator, is then left out). ``codes``: see
    :func:`evaluate_edit_methods`. ``hold`` adds the held rows (:func:`evaluate_edit_methods`),
    holding every attribute of the classifier but the one the factor drives, along ``axes``
    (the plain generator) or along axes fitted once for the warped one
    (:func:`hold_axes_for` from ``hold_samples`` samples, kept in ``work_dir``).
    """
    from tlgan.delta.warp import warped

    if codes not in CODES:
        raise TlganError(f"codes must be one of {', '.join(CODES)}, not {codes!r}")
    name = generator.name
    generator, encoder = warped(generator, warp) if warp else (generator, "auto")
    plain_axes = axes
    if generator.name != name:
        axes = None
    if hold and classifier is None:
        raise TlganError("holding attributes needs a classifier to read them")
    sizes = sorted({int(k) for k in train_identities})
    if not sizes or sizes[0] < 1:
        raise TlganError(f"train_identities must be positive counts, not {list(train_identities)}")
    if int(test_identities) < 1:
        raise TlganError(f"test_identities must be at least 1, not {test_identities}")
    train_seeds = [int(s) for s in train_seeds]
    if not train_seeds or len(set(train_seeds)) != len(train_seeds):
        raise TlganError(f"train_seeds must be distinct seeds, at least one; got {train_seeds}")
    key = _train_key(dict(train_kwargs or {}))
    if joint_rank:  # other training latents: other model folders
        key += f"-joint{int(joint_rank)}x{int(joint_steps)}"
    factors = [factor_name(f) for f in factors]
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tlgan-delta-eval-")
        work_dir = tmp.name
    work = Path(work_dir)
    if generator.name != name:
        work = work / generator.name.replace(":", "-").replace(
            "+", "_"
        )  # its own inversions, beside the plain ones
    results: dict[str, Any] = {
        "generator": generator.name,
        "space": "z",
        "steps": int(steps),
        "seed": int(seed),
        "warp": warp or None,
        "train_identities": sizes,
        "test_identities": int(test_identities),
        "inversion_steps": int(inversion_steps),
        "inversion_patience": inversion_patience,
        "target_gain_db": TARGET_GAIN_DB,
        "codes": codes,
        "train": dict(train_kwargs or {}),
        "train_seeds": train_seeds,
        "joint_rank": int(joint_rank),
        "joint_steps": int(joint_steps) if joint_rank else None,
        "hold": bool(hold),
        "factors": {},
    }
    try:
        hold_axes = None
        if hold:
            hold_axes = plain_axes if generator.name == name and plain_axes is not None else None
            hold_axes = hold_axes or hold_axes_for(
                generator, classifier, work, hold_samples, progress=progress
            )
            results["hold_axes"] = {
                "method": hold_axes.method,
                "generator": hold_axes.generator,
                "samples": None if hold_axes is plain_axes else int(hold_samples),
            }
        for factor in factors:
            train_seqs, train_lat = _sequence_latents(
                factor,
                sizes[-1],
                steps,
                seed,
                generator,
                work / factor / "train",
                inversion_steps,
                progress,
                encoder=encoder,
                patience=inversion_patience,
            )
            test_seqs, test_lat = _sequence_latents(
                factor,
                test_identities,
                steps,
                seed + 1,
                generator,
                work / factor / "test",
                inversion_steps,
                progress,
                encoder=encoder,
                patience=inversion_patience,
            )
            frames_wander = sequence_wander(train_lat[: sizes[-1]])
            if joint_rank:
                from tlgan.delta.joint import joint_latents

                train_lat = joint_latents(
                    read_sequences(work / factor / "train"),
                    generator,
                    train_lat,
                    rank=joint_rank,
                    steps=joint_steps,
                    progress=progress,
                )
            attribute = ATTRIBUTE_OF.get(factor)
            axis = _axis_direction(axes, attribute) if attribute is not None else None
            held_names = None
            if hold_axes is not None:
                from tlgan.editing.hold import held_attributes

                held_names = held_attributes(classifier, hold_axes, "all", moved=[attribute])
            curve = {}
            model = None
            for k in sizes:
                runs = []
                held = None
                for train_seed in train_seeds:
                    model = train_delta(
                        [train_lat[:k]],
                        work / factor / f"model-{k}-seed{train_seed}-{key}",
                        values=[train_seqs.values.tolist()],
                        factor=factor,
                        generator=generator.name,
                        seed=train_seed,
                        resume=True,
                        progress=progress,
                        **(train_kwargs or {}),
                    )
                    if held_names is not None and held is None:
                        degrees = model.info.get("path_degrees") or [0]
                        choice = choose_hold(
                            generator,
                            classifier,
                            train_lat[:k],
                            train_seqs.values,
                            train_seqs.images[:k],
                            hold_axes,
                            held_names,
                            int(degrees[0]),
                        )
                        held = (hold_axes, held_names, choice, {})
                    runs.append(
                        evaluate_edit_methods(
                            generator,
                            classifier,
                            factor=factor,
                            train_latents=train_lat[:k],
                            values=train_seqs.values,
                            test_latents=test_lat,
                            test_images=test_seqs.images,
                            model=model,
                            axis=axis,
                            codes=codes,
                            train_world=train_seqs.latents[:k],
                            hold=held,
                        )
                    )
                curve[str(k)] = _mean_over_seeds(runs)
                log.info(
                    "%s, %d identities: learned %.2f dB, linear %.2f dB, headroom %.2f dB",
                    factor,
                    k,
                    curve[str(k)]["learned"]["psnr_db"],
                    curve[str(k)]["linear"]["psnr_db"],
                    curve[str(k)]["headroom_db"],
                )
            results["factors"][factor] = {
                "values": train_seqs.values.tolist(),
                "by_identities": curve,
                "best": curve[str(sizes[-1])],
                "train_wander": sequence_wander(train_lat[: sizes[-1]]),
                "train_wander_per_image": frames_wander,
                "test_wander": sequence_wander(test_lat),
            }
            if model is not None and model.info.get("path_degrees"):
                results["factors"][factor]["path_degree"] = int(model.info["path_degrees"][0])
            if grid_dir is not None:
                path = Path(grid_dir) / f"grid-{factor}.png"
                edit_grid(
                    generator,
                    model,
                    train_lat[: sizes[-1]],
                    train_seqs.values,
                    test_lat,
                    test_seqs.images,
                    path,
                    classifier=classifier,
                    hold=None if held is None else held[:2],
                )
                results["factors"][factor]["grid"] = path.name
    finally:
        if tmp is not None:
            tmp.cleanup()
    return results


__all__ = [
    "evaluate_delta",
    "evaluate_edit_methods",
    "ceiling_summary",
    "sequence_wander",
    "edit_grid",
    "DEFAULT_FACTORS",
    "TARGET_GAIN_DB",
]
