"""The reference rows of the learned-edit benchmark: the world's own edit (tlgan.delta.truth) and the
edit as `tlgan delta edit --alpha` applies it."""

from __future__ import annotations

import pytest
import torch

from test_delta_noise import NOISE, SETTINGS, STEPS, bent_sequences
from tlgan.delta.truth import exact_edit, exact_mean_path, reference_edits, set_factor
from tlgan.errors import TlganError
from tlgan.toyfaces import world
from tlgan.toyfaces.render import render
from tlgan.toyfaces.sequences import factor_sequences, identity_latents

CASES = [
    ("yaw", 12.0),
    ("light_angle", -100.0),
    ("smile", 0.8),
    ("age", 55.0),
    ("nose_size", 1.6),
    ("masculinity", 0.2),
    ("background_hue", 0.3),
    ("scale", 1.05),
]


@pytest.mark.parametrize("factor,value", CASES)
def test_set_factor_changes_that_factor_alone(factor, value):
    z = identity_latents(12, seed=3).double()
    edited = set_factor(z, factor, torch.full((12,), value))
    before, after = world.factors(z), world.factors(edited)
    assert torch.allclose(after[factor], torch.full((12,), value, dtype=torch.float64), atol=1e-4)
    for name in before:
        if name != factor:
            assert torch.allclose(after[name], before[name], atol=1e-5), name
    # The smallest such change: nothing outside the 25 directions the world reads.
    unread = world.base_directions().double()[world.FIRST_UNUSED_BASE :]
    assert float((unread @ (edited - z).T).abs().max()) < 1e-6


def test_set_factor_draws_the_renderers_own_sequence():
    seqs = factor_sequences("light_angle", 3, 4, seed=0)
    z = seqs.latents.double().repeat_interleave(4, 0)
    edited = set_factor(z, "light_angle", torch.tensor(seqs.values).repeat(3))
    images = render(world.factors(edited.float()))
    assert float((images - seqs.images.flatten(0, 1)).abs().max()) < 1e-3


def test_set_factor_refuses_unknown_factors_and_mismatched_shapes():
    z = identity_latents(2, seed=0)
    with pytest.raises(TlganError, match="unknown toyfaces factor"):
        set_factor(z, "eyebrow", [0.1, 0.2])
    with pytest.raises(TlganError, match="one value per latent"):
        set_factor(z, "yaw", [1.0])
    with pytest.raises(TlganError, match="must have shape"):
        set_factor(z[:, :10], "yaw", [1.0, 2.0])


def test_the_exact_edit_goes_through_a_warp_and_is_refused_by_other_generators():
    from tlgan.delta.warp import warped
    from tlgan.models import load_generator

    inner = load_generator("toyfaces-render")
    bent, _ = warped(inner, "bend:1.0")
    u = inner.sample_latents(5, seed=2)
    assert torch.allclose(bent.from_world(bent.to_world(u)), u, atol=1e-5)
    target = torch.linspace(-100, 100, 5)
    edited = exact_edit(bent, u, "light_angle", target)
    got = world.factors(bent.to_world(edited))
    want = world.factors(bent.to_world(u))
    assert torch.allclose(got["light_angle"], target, atol=1e-3)
    assert torch.allclose(got["masculinity"], want["masculinity"], atol=1e-5)
    # In the bent latent the exact change is not the world's straight one: the bend is undone.
    straight = exact_edit(inner, bent.to_world(u), "light_angle", target)
    assert float((edited - straight).norm(dim=1).min()) > 1e-2

    class Other:
        name, z_dim = "some-gan", 512

    assert exact_edit(Other(), u, "yaw", torch.zeros(5)) is None
    assert exact_mean_path(Other(), u, "yaw", [0.0, 1.0]) is None


def test_reference_rows_are_the_truth_on_clean_latents():
    """On the renderer with its own latents as the 'inversions', the exact edit reproduces the
    true targets; the mean exact change of other faces does not (it is the same for every face,
    and a turning light's path depends on the face)."""
    from tlgan.delta.evaluate import evaluate_edit_methods
    from tlgan.delta.model import DeltaModel
    from tlgan.models import load_classifier, load_generator

    G = load_generator("toyfaces-render")
    F = load_classifier("toyfaces-classifier")
    train = factor_sequences("light_angle", 4, 4, seed=0)
    test = factor_sequences("light_angle", 2, 4, seed=1)

    def latents(seqs):
        k, n = len(seqs.latents), len(seqs.values)
        z = seqs.latents.double().repeat_interleave(n, 0)
        return set_factor(z, "light_angle", torch.tensor(seqs.values).repeat(k)).float().reshape(k, n, -1)

    out = evaluate_edit_methods(
        G,
        F,
        factor="light_angle",
        train_latents=latents(train),
        values=train.values,
        test_latents=latents(test),
        test_images=test.images,
        model=DeltaModel((512,), delta_dim=2, hidden=8, subspace=2, decoder="shared"),
        codes="mean",
        train_world=train.latents,
    )
    exact, mean = out["exact"], out["exact_mean"]
    assert exact["factor_error"] < 1e-2 and exact["off_target_identity"] < 1e-4
    assert exact["psnr_db"] > 40 and exact["psnr_db"] >= out["inversion"]["psnr_db"] - 0.01
    assert exact["off_target_classifier"] == pytest.approx(
        out["true_change"]["off_target_classifier"], abs=2e-3
    )
    assert mean["factor_error"] > 1.0 and mean["psnr_db"] < exact["psnr_db"] - 3
    # Without the training identities' world latents there is no mean row.
    rows = reference_edits(G, "light_angle", latents(test)[:, 0], torch.zeros(2), None, None, None)
    assert set(rows) == {"exact"}


def test_the_alpha_row_is_the_edit_that_tlgan_delta_edit_applies(tmp_path):
    """``learned_alpha`` scores ``model.edit(start, alpha)`` with alpha = (v_j - v_i) / unit, the
    edit a user of ``tlgan delta edit --alpha`` gets, beside the benchmark's fitted codes."""
    from tlgan.delta import train_delta
    from tlgan.delta.evaluate import _mean_over_seeds, _psnr, evaluate_edit_methods
    from tlgan.models import load_generator

    G = load_generator("toyfaces-render")
    train = factor_sequences("yaw", 3, 3, seed=0)
    test = factor_sequences("yaw", 1, 3, seed=1)
    z_train = train.latents.repeat_interleave(3, 0)
    lat = set_factor(z_train.double(), "yaw", torch.tensor(train.values).repeat(3)).float().reshape(3, 3, -1)
    z_test = set_factor(test.latents.double().repeat_interleave(3, 0), "yaw", torch.tensor(test.values))
    z_test = z_test.float().reshape(1, 3, -1)
    model = train_delta(
        [lat], tmp_path, values=[train.values.tolist()], steps=20, hidden=16, delta_dim=2, progress=False
    )
    out = evaluate_edit_methods(
        G,
        None,
        factor="yaw",
        train_latents=lat,
        values=train.values,
        test_latents=z_test,
        test_images=test.images,
        model=model,
    )
    pairs = [(i, j) for i in range(3) for j in range(3) if i != j]
    psnr = []
    for i, j in pairs:
        alpha = (train.values[j] - train.values[i]) / model.info["unit"]
        edited = model.edit(z_test[0, i], alpha)[None]
        psnr.append(float(_psnr(G, edited, test.images[0, j][None])))
    assert out["learned_alpha"]["psnr_db"] == pytest.approx(sum(psnr) / len(psnr), abs=2e-3)
    assert out["learned_alpha"]["psnr_db"] != out["learned"]["psnr_db"]
    assert {"learned", "learned_steps", "learned_alpha"} <= set(out)
    # Over training seeds it is averaged like the learned row, not kept from the first seed.
    other = {
        **out,
        "learned_alpha": {**out["learned_alpha"], "psnr_db": out["learned_alpha"]["psnr_db"] + 1.0},
    }
    mean = _mean_over_seeds([out, other])
    assert mean["learned_alpha"]["psnr_db"] == pytest.approx(out["learned_alpha"]["psnr_db"] + 0.5, abs=1e-3)
    assert mean["learned_alpha"]["by_seed"]["psnr_db"][1] == pytest.approx(
        out["learned_alpha"]["psnr_db"] + 1
    )


def test_step_codes_make_the_mean_change_of_that_many_steps_from_every_start(tmp_path):
    """With the code-only decoder an edit is b + S(code), the same from every start, so the code
    fitted for s steps from every training position must make the mean over those positions of
    the s-step change (least squares); a pair's code, fitted from one step, makes that step's."""
    from tlgan.delta import train_delta
    from tlgan.delta.train import fit_codes, step_codes

    train = bent_sequences(6, seed=0).float()
    model = train_delta(
        [train],
        tmp_path,
        values=[STEPS.tolist()],
        decoder="shared",
        steps=600,
        lr=3e-3,
        hidden=64,
        delta_dim=3,
        path_degree=0,
        progress=False,
    )
    n, d = train.shape[1:]
    pairs = [(0, 1), (5, 6), (0, 3), (6, 2)]
    ii, jj = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    codes = step_codes(model, train, ii, jj)
    with torch.no_grad():
        moves = model.move(torch.zeros(len(pairs), d), codes)
    for (i, j), move in zip(pairs, moves, strict=True):
        s = j - i
        starts = [a for a in range(n) if 0 <= a + s < n]
        mean = (train[:, [a + s for a in starts]] - train[:, starts]).mean((0, 1))
        assert float((move - mean).norm()) < 0.05 * float(mean.norm()), (i, j)
    # The same number of steps gets the same code wherever it starts; on the bend the change of
    # one step at the start of the path is not the one at its end, and a pair's own code knows it.
    assert torch.equal(codes[0], codes[1])
    own = fit_codes(model, train[:, ii].transpose(0, 1), train[:, jj].transpose(0, 1), codes)
    with torch.no_grad():
        own_moves = model.move(torch.zeros(len(pairs), d), own)
    first, last = (train[:, 1] - train[:, 0]).mean(0), (train[:, 6] - train[:, 5]).mean(0)
    assert float((own_moves[0] - first).norm()) < 0.1 * float((first - last).norm())
    assert float((own_moves[1] - last).norm()) < 0.1 * float((first - last).norm())


def test_read_steps_places_latents_of_new_faces_on_the_path(tmp_path):
    """On the planted bend with noise of known size, a held-out face's latent at step a is read
    as step a almost always (the steps are 0.67 apart on the bent axis, the noise 0.1); with the
    noise as large as the steps, reading is worse but still near. (Plain distances in the model's
    subspace read 0.39 steps off even at noise 0.1: each face's own coordinate on the direction
    the path bends into misplaces it.)"""
    from tlgan.delta import train_delta
    from tlgan.delta.edit import read_steps

    g = torch.Generator().manual_seed(3)
    train = bent_sequences(10, seed=0).float()
    model = train_delta(
        [train],
        tmp_path,
        values=[STEPS.tolist()],
        steps=50,
        hidden=16,
        delta_dim=2,
        path_degree=0,
        progress=False,
    )
    test = bent_sequences(20, seed=1).float()
    truth = torch.arange(test.shape[1]).repeat(20)
    errors = []
    for noise in (0.1, 0.6):
        noisy = test + noise * torch.randn(test.shape, generator=g)
        read = read_steps(model, train, noisy.reshape(-1, test.shape[-1]))
        errors.append(float((read - truth).abs().float().mean()))
    assert errors[0] < 0.05 and errors[0] < errors[1] < 1.5, errors


def test_alpha_counts_steps_through_the_step_table(tmp_path):
    """``edit(latents, alpha)`` uses the code fitted for that many steps (interpolated between
    whole steps, the last one scaled beyond the table); on the planted bend seen through noise
    it is closer to the truth than the one-step code scaled by alpha, and no worse than the line.
    Model folders without the table scale the one-step code as before."""
    from tlgan.delta import linear_direction, load_delta, save_delta, train_delta

    g = torch.Generator().manual_seed(7)
    clean_train, clean_test = bent_sequences(10, seed=0), bent_sequences(20, seed=1)
    train = clean_train + NOISE * torch.randn(clean_train.shape, generator=g)
    test = clean_test + NOISE * torch.randn(clean_test.shape, generator=g)
    model = train_delta([train], tmp_path / "m", values=[STEPS.tolist()], **SETTINGS)
    table = model.info["step_codes"]
    assert table["steps"] == [-6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6]
    codes = {s: torch.tensor(c) for s, c in zip(table["steps"], table["codes"], strict=True)}
    got = model.alpha_codes(torch.tensor([0.0, 2.0, -3.0, 1.5, 9.0]))
    assert torch.equal(got[0], torch.zeros(model.delta_dim))
    assert torch.allclose(got[1], codes[2]) and torch.allclose(got[2], codes[-3])
    assert torch.allclose(got[3], (codes[1] + codes[2]) / 2)
    assert torch.allclose(got[4], codes[6] * 1.5)

    k, n, d = test.shape
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    ii, jj = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    start = test[:, ii].reshape(-1, d)
    target = start + (clean_test[:, jj] - clean_test[:, ii]).reshape(-1, d)
    alpha = ((STEPS[jj] - STEPS[ii]) / model.info["unit"]).repeat(k)
    with torch.no_grad():
        stepped = model.move(start, model.alpha_codes(alpha))
        scaled = model.move(start, alpha[:, None] * model.reference_delta[None])
    line = (
        start + (STEPS[jj] - STEPS[ii]).repeat(k)[:, None] * linear_direction([train], [STEPS.double()])[None]
    )
    err = {
        name: float((x - target).norm(dim=1).mean())
        for name, x in [("stepped", stepped), ("scaled", scaled), ("line", line)]
    }
    assert err["stepped"] < 0.97 * err["scaled"] and err["stepped"] < err["line"], err
    assert torch.allclose(model.edit(start[:3], 2.0), model.move(start[:3], codes[2].expand(3, -1)))
    # A folder written before the table: the one-step code scaled, as then.
    del model.info["step_codes"]
    save_delta(model, tmp_path / "old")
    old = load_delta(tmp_path / "old")
    assert torch.equal(old.edit(start[:3], 2.0), model.move(start[:3], 2.0 * model.reference_delta))
