"""Learned edits (tlgan.delta): curved paths, exact resume, sequence folders, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tlgan.cli import cli
from tlgan.delta import (
    delta_edit,
    delta_walk,
    linear_direction,
    load_delta,
    read_sequences,
    train_delta,
    write_sequences,
)
from tlgan.errors import TlganError
from tlgan.imaging import save_image
from tlgan.toyfaces import world
from tlgan.toyfaces.sequences import factor_name, factor_sequences, render_with

ANGLES = np.linspace(-120.0, 120.0, 7)  # degrees: a long arc, far from any straight line


def rotation_world(k: int, seed: int, dim: int = 4):
    """K sequences in R^dim whose change is a rotation in the (e0, e1) plane.

    Identity = a radius r in [1, 2] and the other coordinates; step t puts the point at angle
    ANGLES[t] on its circle. Returns latents (K, n, dim)."""
    g = torch.Generator().manual_seed(seed)
    r = 1.0 + torch.rand(k, generator=g)
    rest = torch.randn(k, dim - 2, generator=g)
    theta = torch.deg2rad(torch.as_tensor(ANGLES, dtype=torch.float32))
    x = torch.empty(k, len(ANGLES), dim)
    x[:, :, 0] = r[:, None] * torch.cos(theta)[None]
    x[:, :, 1] = r[:, None] * torch.sin(theta)[None]
    x[:, :, 2:] = rest[:, None]
    return x


TINY = dict(steps=800, batch_size=64, lr=3e-3, hidden=64, delta_dim=2, subspace=0, noise=0.05, progress=False)


@pytest.fixture(scope="module")
def rotation_model(tmp_path_factory):
    train = rotation_world(24, seed=0)
    model = train_delta(
        [train], tmp_path_factory.mktemp("rot"), values=[ANGLES.tolist()], factor="angle", **TINY
    )
    return model, train


def edit_every_pair(model, train, test, values):
    """Each test sequence's step i moved to step j (i != j) by the learned edit (the code of that
    change averaged over the training sequences) and by the least-squares line.

    Returns (start, target, learned, linear, direction): (k * n * (n - 1), D) latents and the line's (D,)."""
    values = torch.as_tensor(values, dtype=torch.float64)
    k, n, d = test.shape
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    ii, jj = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    with torch.no_grad():
        codes = (
            model.encode(train[:, ii].reshape(-1, d), train[:, jj].reshape(-1, d))
            .reshape(len(train), len(pairs), -1)
            .mean(0)
        )
        start, target = test[:, ii].reshape(-1, d), test[:, jj].reshape(-1, d)
        learned = model.move(start, codes.repeat(k, 1))
    direction = linear_direction([train], [values])
    steps = (values[jj] - values[ii]).float().repeat(k)[:, None]
    return start, target, learned, start + steps * direction[None], direction


def test_learned_decoder_follows_a_rotation_a_straight_line_cannot(rotation_model):
    model, train = rotation_model
    start, target, learned, linear, direction = edit_every_pair(
        model, train, rotation_world(20, seed=1), ANGLES
    )
    err_learned = (learned - target).norm(dim=1).mean()
    err_linear = (linear - target).norm(dim=1).mean()
    assert err_learned < 0.25 * err_linear, (float(err_learned), float(err_linear))
    # The learned edit stays on each identity's circle; the straight chord cuts inside it.
    radius = start[:, :2].norm(dim=1)
    off_learned = (learned[:, :2].norm(dim=1) - radius).abs().mean()
    off_linear = (linear[:, :2].norm(dim=1) - radius).abs().mean()
    assert off_learned < 0.4 * off_linear, (float(off_learned), float(off_linear))
    # The least-squares line of a symmetric arc points along e1: it cannot follow the curve.
    assert abs(float(direction[1])) > 5 * abs(float(direction[0]))
    # What does not change (the other coordinates) stays put.
    assert (learned[:, 2:] - start[:, 2:]).abs().mean() < 0.1


def test_alpha_zero_is_no_edit_and_walk_matches_edit(rotation_model):
    model, train = rotation_model
    x = rotation_world(3, seed=5)[:, 3]
    assert torch.equal(delta_edit(x, model, 0.0), x)
    walk = delta_walk(x[0], model, [-1.0, 0.0, 1.5])
    assert walk.shape == (3, 4)
    assert torch.allclose(walk[2], delta_edit(x[0], model, 1.5), atol=1e-6)
    assert torch.allclose(walk[1], x[0])
    # One reference step (40 degrees here) turns a point forwards along its circle; with this
    # small a training run it falls short of the full step, but two steps turn further.
    moved = delta_edit(x, model, 1.0)
    turn = torch.rad2deg(torch.atan2(moved[:, 1], moved[:, 0]) - torch.atan2(x[:, 1], x[:, 0]))
    assert model.info["unit"] == pytest.approx(40.0)
    assert torch.all((turn > 10.0) & (turn < 60.0)), turn
    twice = delta_edit(x, model, 2.0)
    turn2 = torch.rad2deg(torch.atan2(twice[:, 1], twice[:, 0]) - torch.atan2(x[:, 1], x[:, 0]))
    assert torch.all(turn2 > turn + 5.0), (turn, turn2)
    back = delta_edit(x, model, -1.0)
    turn_back = torch.rad2deg(torch.atan2(back[:, 1], back[:, 0]) - torch.atan2(x[:, 1], x[:, 0]))
    assert torch.all(turn_back < -10.0), turn_back
    with pytest.raises(TlganError, match="shape"):
        delta_edit(torch.zeros(5), model, 1.0)
    with pytest.raises(TlganError, match="finite"):
        delta_edit(x, model, math.inf)


def test_saved_model_round_trips(rotation_model, tmp_path):
    model, _ = rotation_model
    again = load_delta(model.info.get("out", None) or _save(model, tmp_path))
    x = rotation_world(2, seed=9)[:, 0]
    assert torch.equal(again.edit(x, 1.0), model.edit(x, 1.0))
    config = json.loads((tmp_path / "model.json").read_text())
    assert config["kwargs"] == {
        "latent_shape": [4],
        "delta_dim": 2,
        "hidden": 64,
        "subspace": 0,
        "decoder": "both",
    }
    assert config["info"]["training"]["lambda_b"] == 1.0 and config["info"]["factor"] == "angle"
    with pytest.raises(TlganError, match="not a learned edit"):
        load_delta(tmp_path / "nothing-here")


def _save(model, path):
    from tlgan.delta import save_delta

    save_delta(model, path)
    return path


class Crash(Exception):
    pass


def test_training_resumes_bit_for_bit(tmp_path):
    data = [rotation_world(3, seed=2)]
    kw = dict(
        values=[ANGLES.tolist()],
        steps=30,
        batch_size=16,
        hidden=16,
        delta_dim=3,
        checkpoint_every=10,
        progress=False,
    )
    straight = train_delta(data, tmp_path / "straight", **kw)

    def crash(step):
        if step == 17:
            raise Crash

    with pytest.raises(Crash):
        train_delta(data, tmp_path / "split", on_step=crash, **kw)
    assert not (tmp_path / "split" / "model.json").exists()
    with pytest.raises(TlganError, match="--resume"):
        train_delta(data, tmp_path / "split", **kw)
    with pytest.raises(TlganError, match=r"other settings \(lr: checkpoint 0.001, now 0.01\)"):
        train_delta(data, tmp_path / "split", resume=True, **{**kw, "lr": 1e-2})
    with pytest.raises(TlganError, match="data: checkpoint"):
        train_delta([rotation_world(3, seed=3)], tmp_path / "split", resume=True, **kw)
    resumed = train_delta(data, tmp_path / "split", resume=True, **kw)
    assert resumed.info["training"]["resumed_from"] == 10
    a, b = straight.state_dict(), resumed.state_dict()
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def _images(k: int, n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(k, n, 3, 16, 16, generator=g) * 2 - 1


def test_sequence_folder_round_trip_and_natural_order(tmp_path):
    seqs = write_sequences(
        tmp_path / "s", _images(2, 3), values=[0.0, 0.5, 1.0], factor="smile", names=["a", "b"]
    )
    assert seqs.names == ["a", "b"] and seqs.n_steps == 3 and seqs.factor == "smile"
    # Files sort by number, not by text: 2 before 10.
    for name in ("2.png", "10.png", "1.png"):
        save_image(_images(1, 1)[0, 0], tmp_path / "n" / "x" / name)
        save_image(_images(1, 1)[0, 0], tmp_path / "n" / "y" / name)
    natural = read_sequences(tmp_path / "n")
    assert [p.name for p in natural.files[0]] == ["1.png", "2.png", "10.png"]
    assert natural.values == [0.0, 1.0, 2.0] and natural.factor is None
    assert natural.images(8).shape == (2, 3, 3, 8, 8)


def test_bad_sequence_folders_get_clear_errors(tmp_path):
    with pytest.raises(TlganError, match="no such sequence folder"):
        read_sequences(tmp_path / "missing")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(TlganError, match="holds no sequences"):
        read_sequences(tmp_path / "empty")
    save_image(_images(1, 1)[0, 0], tmp_path / "single" / "a" / "0.png")
    with pytest.raises(TlganError, match="'a' has 1 image; every sequence needs at least two steps"):
        read_sequences(tmp_path / "single")
    write_sequences(tmp_path / "unequal", _images(2, 3), values=[0, 1, 2])
    (tmp_path / "unequal" / "seq001" / "002.png").unlink()
    with pytest.raises(TlganError, match=r"unequal lengths \(seq000: 3, seq001: 2\)"):
        read_sequences(tmp_path / "unequal")
    write_sequences(tmp_path / "broken", _images(2, 3), values=[0, 1, 2])
    (tmp_path / "broken" / "seq001" / "001.png").write_bytes(b"not a png")
    seqs = read_sequences(tmp_path / "broken")
    with pytest.raises(TlganError, match="seq001/001.png: not an image"):
        seqs.images(16)
    write_sequences(tmp_path / "values", _images(2, 3), values=[0, 1, 2])
    meta = json.loads((tmp_path / "values" / "sequences.json").read_text())
    (tmp_path / "values" / "sequences.json").write_text(json.dumps({**meta, "values": [0, 1]}))
    with pytest.raises(TlganError, match="'values' has 2 entries but each sequence has 3 images"):
        read_sequences(tmp_path / "values")


def test_toyfaces_sequences_change_only_their_factor_and_know_the_truth():
    seqs = factor_sequences("light", identities=2, steps=3, seed=4)
    assert seqs.factor == "light_angle" and seqs.images.shape == (2, 3, 3, 64, 64)
    assert np.allclose(seqs.factors["light_angle"][0].numpy(), [-120.0, 0.0, 120.0])
    for name in world.FACTOR_NAMES:
        if name != "light_angle":
            assert torch.equal(seqs.factors[name][:, :1].expand(-1, 3), seqs.factors[name])
    # Consecutive steps differ; the truth for any value is one render away.
    assert (seqs.images[:, 0] - seqs.images[:, 2]).abs().mean() > 0.005
    again = render_with(seqs.latents, "light_angle", torch.full((2,), 120.0))
    assert torch.allclose(again, seqs.images[:, 2], atol=1e-5)
    with pytest.raises(TlganError, match="did you mean.*yaw"):
        factor_name("yawn")


def test_cli_sequences_train_edit(tmp_path):
    runner = CliRunner()
    seq = tmp_path / "seq"
    r = runner.invoke(
        cli,
        f"toyfaces sequences --factor yaw --identities 2 --steps 3 --out {seq} --inversion-steps 0 --json".split(),
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["factor"] == "yaw" and out["values"] == [-25.0, 0.0, 25.0] and out["inverted"]
    meta = json.loads((seq / "sequences.json").read_text())
    assert meta["identity_factors"]["id0000"]["age"] > 0 and (seq / "latents.safetensors").is_file()
    model_dir = tmp_path / "model"
    r = runner.invoke(
        cli, f"delta train {seq} --out {model_dir} --steps 20 --hidden 16 --inversion-steps 0 --json".split()
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["unit"] == pytest.approx(25.0)
    r = runner.invoke(cli, ["delta", "train", str(seq), "--out", str(model_dir), "--steps", "20", "--json"])
    assert r.exit_code != 0 and "--resume" in str(r.exception or r.output)
    r = runner.invoke(
        cli,
        f"delta edit --model {model_dir} --seed 3 --alphas -1,0,1 --out {tmp_path / 'grid.png'} --gif {tmp_path / 'walk.gif'} --json".split(),
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "grid.png").stat().st_size > 0 and (tmp_path / "walk.gif").stat().st_size > 0
    r = runner.invoke(
        cli,
        f"delta edit --model {model_dir} --seed 3 --alpha 1.5 --out {tmp_path / 'one.png'} --save-latent {tmp_path / 'z.safetensors'}".split(),
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        cli,
        f"delta edit --model {model_dir} --latent {tmp_path / 'z.safetensors'} --alpha -1.5 --out {tmp_path / 'back.png'}".split(),
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["delta", "edit", "--model", str(model_dir), "--out", str(tmp_path / "x.png")])
    assert r.exit_code != 0 and "exactly one start" in str(r.exception or r.output)
    # --hold: the edit with Male and Eyeglasses read as on the start, along the given axes.
    from tlgan.editing.latent_file import load_latent
    from tlgan.models import load_classifier, load_generator

    load_generator("toyfaces-render").true_axes(["Male", "Eyeglasses"]).save(tmp_path / "axes.safetensors")
    hold = ["--hold", "Male,Eyeglasses", "--axes", str(tmp_path / "axes.safetensors")]
    r = runner.invoke(
        cli,
        f"delta edit --model {model_dir} --seed 3 --alpha 1.5 --out {tmp_path / 'held.png'} --save-latent {tmp_path / 'h.safetensors'} --json".split()
        + hold,
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["held"] == ["Male", "Eyeglasses"]
    G, F = load_generator("toyfaces-gan"), load_classifier("toyfaces-classifier")
    start = G.sample_latents(1, seed=3)
    heads = [F.attribute_index("Male"), F.attribute_index("Eyeglasses")]

    def read(z):
        return F.logits(G.synthesize(z.reshape(1, -1)))[0, heads]

    with torch.no_grad():
        drift = (read(load_latent(tmp_path / "z.safetensors")[0]) - read(start)).abs()
        held = (read(load_latent(tmp_path / "h.safetensors")[0]) - read(start)).abs()
    assert float(held.sum()) < 0.9 * float(drift.sum()), (held, drift)
    r = runner.invoke(
        cli,
        f"delta edit --model {model_dir} --seed 3 --alphas -1,0,1 --out {tmp_path / 'g.png'}".split() + hold,
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(
        cli,
        f"delta edit --model {model_dir} --seed 3 --out {tmp_path / 'g.png'}".split()
        + ["--hold", "Mael", "--axes", hold[-1]],
    )
    assert r.exit_code != 0 and "Male" in str(r.exception or r.output)


def test_cli_eval_writes_report_on_tiny_settings(tmp_path):
    runner = CliRunner()
    out = tmp_path / "report"
    args = [
        "delta",
        "eval",
        "--factors",
        "light",
        "--train-identities",
        "1,2",
        "--test-identities",
        "1",
        "--steps",
        "3",
        "--inversion-steps",
        "0",
        "--train-steps",
        "30",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
        "--json",
    ]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    entry = result["factors"]["light_angle"]
    assert set(entry["by_identities"]) == {"1", "2"} and entry["values"] == [-120.0, 0.0, 120.0]
    best = entry["best"]
    assert best["pairs"] == 6 and best["no_edit"]["off_target_classifier"] == 0.0
    assert best["gain_db"] == pytest.approx(best["learned"]["psnr_db"] - best["linear"]["psnr_db"], abs=1e-3)
    # Editing to the target can do no better than the inverted target itself by much, and the
    # inverted target beats leaving the latent at the start.
    assert best["inversion"]["psnr_db"] > best["no_edit"]["psnr_db"]
    page = (out / "index.html").read_text()
    assert "light_angle" in page and "data:image/png;base64," in page
    assert json.loads((out / "delta-eval.json").read_text())["factors"]["light_angle"]["best"] == best
    # A rerun reuses the inversions and models kept in --work.
    latents = tmp_path / "work" / "light_angle" / "train" / "latents.safetensors"
    before = latents.stat().st_mtime_ns
    assert runner.invoke(cli, args).exit_code == 0
    assert latents.stat().st_mtime_ns == before


def test_eval_adds_the_axis_baseline_for_factors_an_attribute_drives(tmp_path):
    from tlgan.delta.evaluate import evaluate_delta
    from tlgan.models import load_classifier, load_generator

    G, F = load_generator("toyfaces-gan"), load_classifier("toyfaces-classifier")
    axes = load_generator("toyfaces-render").true_axes(["Smiling", "Male"])
    result = evaluate_delta(
        G,
        F,
        factors=["smile"],
        train_identities=[2],
        test_identities=1,
        steps=3,
        inversion_steps=0,
        axes=axes,
        train_kwargs={"steps": 20},
        progress=False,
    )
    best = result["factors"]["smile"]["best"]
    assert math.isfinite(best["axis"]["psnr_db"]) and best["axis"]["off_target_classifier"] > 0
    # The axis moves along the true Smiling direction only: it changes the world's smile factor
    # and leaves the identity factors (orthogonal directions) nearly alone.
    assert best["axis"]["off_target_identity"] < 0.02


# --- headroom and the synthetic warp ------------------------------------------------------


def test_headroom_is_ceiling_minus_line_and_flags_an_unreachable_target():
    from tlgan.delta.evaluate import ceiling_summary

    entry = {
        "learned": {"psnr_db": 24.0},
        "linear": {"psnr_db": 24.3},
        "inversion": {"psnr_db": 25.0},
        "gain_db": -0.3,
    }
    got = ceiling_summary(entry)
    assert got["headroom_db"] == pytest.approx(0.7) and got["target_above_ceiling"] is True
    assert got["headroom_used"] == pytest.approx(-0.3 / 0.7, abs=1e-3)
    entry = {
        "learned": {"psnr_db": 23.0},
        "linear": {"psnr_db": 20.0},
        "inversion": {"psnr_db": 25.0},
        "gain_db": 3.0,
    }
    got = ceiling_summary(entry, target_db=1.0)
    assert got["headroom_db"] == pytest.approx(5.0) and got["target_above_ceiling"] is False
    assert got["headroom_used"] == pytest.approx(0.6)
    entry["inversion"]["psnr_db"] = 19.0  # no headroom at all: the share is undefined, not a division by zero
    assert ceiling_summary(entry)["headroom_used"] is None


def test_bend_warp_is_exactly_invertible_smooth_and_bends_straight_paths():
    from tlgan.delta.warp import BendWarp, parse_warp

    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    warp = BendWarp(q[:, :2].T, q[:, 2], strength=0.4)
    u = torch.randn(50, 6, generator=g)
    assert torch.allclose(warp.inverse(warp(u)), u, atol=1e-5)
    assert torch.allclose(warp(warp.inverse(u)), u, atol=1e-5)
    # Smooth with a unit Jacobian determinant (volume kept), and not linear: J depends on u.
    jac = lambda x: torch.autograd.functional.jacobian(lambda y: warp(y[None].double())[0], x.double())  # noqa: E731
    j0, j1 = jac(u[0]), jac(u[1])
    assert float(torch.linalg.det(j0)) == pytest.approx(1.0, abs=1e-6)
    assert not torch.allclose(j0, j1)
    # A straight world path along a bent axis is the parabola u(t) = z(t) - k t^2 q in u: its
    # second differences are -2 k dt^2 q exactly, where a line's are zero.
    t = torch.linspace(-2, 2, 9, dtype=torch.float64)
    z = 0.3 * q[:, 5][None] + t[:, None] * q[:, 0][None]
    path = warp.inverse(z.float()).double()
    second = path[2:] - 2 * path[1:-1] + path[:-2]
    dt = float(t[1] - t[0])
    assert torch.allclose(second, (-2 * 0.4 * dt * dt * q[:, 2])[None].expand_as(second), atol=1e-5)
    # The toyfaces spec bends the benchmark factors' axes into (the part of) Male orthogonal to them.
    bend = parse_warp("bend:0.3")
    assert bend.axes.shape == (4, world.Z_DIM) and bend.strength == 0.3
    male = world.true_directions()[world.ATTRIBUTES.index("Male")]
    assert float(bend.into @ male) > 0.99
    assert parse_warp("none") is None
    for bad in ("bend", "bend:x", "twist:0.3", "bend:0.3:Nobody", "bend:nan"):
        with pytest.raises(TlganError, match="warp|bend"):
            parse_warp(bad)
    with pytest.raises(TlganError, match="orthogonal"):
        BendWarp(q[:, :2].T, q[:, 0], 0.3)


def test_warped_generator_draws_the_inner_generator_at_the_warped_latent():
    from tlgan.delta.warp import warped
    from tlgan.models import load_generator

    G = load_generator("toyfaces-render")
    W, encoder = warped(G, "bend:0.5")
    assert W.name == "toyfaces-render+bend:0.5"
    assert not W.training and not W.inner.training  # in the inner generator's (eval) mode
    u = G.sample_latents(3, seed=4)
    with torch.no_grad():
        assert torch.allclose(W.synthesize(u), G.synthesize(W.warp(u)), atol=1e-6)
    assert torch.allclose(W.to_world(u), W.warp(u))
    same, auto = warped(G, "none")
    assert same is G and auto == "auto"


def bent_world(k: int, seed: int, strength: float = 0.5, dim: int = 5):
    """K sequences whose world path is straight (coordinate 0 from -2 to 2), seen in the warped latent
    u = warp^-1(z) with coordinate 0 bent into coordinate 1: (latents (K, n, dim), warp)."""
    from tlgan.delta.warp import BendWarp

    eye = torch.eye(dim, dtype=torch.float64)
    warp = BendWarp(eye[:1], eye[1], strength)
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(-2.0, 2.0, 7)
    z = torch.randn(k, 1, dim, generator=g).expand(k, len(t), dim).clone()
    z[:, :, 0] = t[None]
    return warp.inverse(z.reshape(-1, dim)).reshape(k, len(t), dim), t, warp


def test_on_a_warped_toy_the_learned_edit_follows_the_curve_the_line_cannot(tmp_path):
    train, t, warp = bent_world(10, seed=0)  # at most 10 training identities
    test, _, _ = bent_world(20, seed=1)
    model = train_delta([train], tmp_path, values=[t.tolist()], factor="bent", **TINY)
    start, target, learned, linear, _direction = edit_every_pair(model, train, test, t)
    err_learned = (learned - target).norm(dim=1).mean()
    err_linear = (linear - target).norm(dim=1).mean()
    assert err_learned < 0.3 * err_linear, (float(err_learned), float(err_linear))
    # Off the path: the change in the world coordinates that should stay (all but 0).
    off = lambda x: (warp(x)[:, 1:] - warp(start)[:, 1:]).abs().mean()  # noqa: E731
    assert off(learned) < 0.5 * off(linear), (float(off(learned)), float(off(linear)))


def test_fitted_codes_make_the_training_changes_better_than_the_mean_code(rotation_model):
    from tlgan.delta.train import fit_codes

    model, train = rotation_model
    k, n, d = train.shape
    pairs = [(0, 6), (3, 1), (2, 5)]
    starts = torch.stack([train[:, i] for i, _ in pairs])  # (C, K, D)
    ends = torch.stack([train[:, j] for _, j in pairs])
    with torch.no_grad():
        mean = torch.stack([model.encode(s, e).mean(0) for s, e in zip(starts, ends, strict=True)])
    fitted = fit_codes(model, starts, ends, mean)

    def error(codes):
        with torch.no_grad():
            moved = model.move(starts.reshape(-1, d), codes.repeat_interleave(k, dim=0))
        return (moved - ends.reshape(-1, d)).pow(2).sum(1).reshape(len(pairs), k).mean(1)

    assert torch.all(error(fitted) <= error(mean) + 1e-6), (error(fitted), error(mean))
    assert float(error(fitted).sum()) < float(error(mean).sum())
    assert all(p.requires_grad for p in model.parameters())  # the networks are left trainable


def test_line_basis_starts_with_the_least_squares_direction():
    from tlgan.delta.train import change_basis

    g = torch.Generator().manual_seed(3)
    values = torch.linspace(-1, 1, 7, dtype=torch.float64)
    # The factor moves along e0 by 0.5 per unit; a larger wander (e1..e3) that does not follow
    # the factor dominates a plain principal analysis.
    x = torch.zeros(4, 7, 6)
    x[:, :, 0] = 0.5 * values.float()[None]
    x[:, :, 1:4] = 2.0 * torch.randn(4, 7, 3, generator=g)
    pca = change_basis([x], 2)
    line = change_basis([x], 3, [values])
    assert abs(float(pca[0, 0])) < 0.9
    direction = linear_direction([x], [values])
    assert abs(float(line[0] @ direction / direction.norm())) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(line @ line.T, torch.eye(3), atol=1e-5)
    with pytest.raises(TlganError, match="basis"):
        train_delta([x], None, values=[values.tolist()], basis="other", progress=False)


def test_cli_eval_through_a_warp_reads_the_world_through_it_and_says_so(tmp_path):
    runner = CliRunner()
    out = tmp_path / "report"
    args = [
        "delta",
        "eval",
        "--factors",
        "yaw",
        "--train-identities",
        "1",
        "--test-identities",
        "1",
        "--steps",
        "3",
        "--inversion-steps",
        "0",
        "--train-steps",
        "30",
        "--warp",
        "bend:0.3",
        "--hold",
        "--hold-samples",
        "1000",
        "--work",
        str(tmp_path / "work"),
        "--out",
        str(out),
        "--json",
    ]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["warp"] == "bend:0.3" and result["generator"] == "toyfaces-gan+bend:0.3"
    # Holding the other attributes: the axes of the warped generator are fitted once in --work,
    # and the held edits change the classifier's other readings less than the edits they hold.
    assert result["hold"] and result["hold_axes"]["samples"] == 1000
    assert (
        tmp_path / "work" / "toyfaces-gan_bend-0.3" / "hold-axes-toyfaces-classifier-1000.safetensors"
    ).is_file()
    held = result["factors"]["yaw"]["best"]
    for row in ("learned", "linear"):
        assert held[f"{row}_held"]["off_target_classifier"] < held[row]["off_target_classifier"]
    assert held["held_gain_db"] == pytest.approx(
        held["learned_held"]["psnr_db"] - held["linear"]["psnr_db"], abs=1e-3
    )
    # With one training identity there is none to leave out: the chosen edit is the plain one.
    assert held["hold_choice"]["hold"] is False and held["learned_chosen"] == held["learned"]
    assert "other attributes held" in (out / "index.html").read_text()
    best = result["factors"]["yaw"]["best"]
    assert best["headroom_db"] == pytest.approx(
        best["inversion"]["psnr_db"] - best["linear"]["psnr_db"], abs=1e-3
    )
    assert best["target_above_ceiling"] == (best["headroom_db"] < result["target_gain_db"])
    # The world's factors are read through the warp: leaving the latent alone changes nothing.
    assert best["no_edit"]["off_target_identity"] == 0.0 and best["linear"]["off_target_identity"] > 0
    assert "Synthetic check" in (out / "index.html").read_text()
    assert (tmp_path / "work" / "toyfaces-gan_bend-0.3" / "yaw" / "train" / "latents.safetensors").is_file()
    r = runner.invoke(cli, args[:-1] + ["--warp", "twist:1"])
    assert r.exit_code != 0 and "bend:STRENGTH" in str(r.exception or r.output)
