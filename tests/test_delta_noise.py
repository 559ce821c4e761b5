"""Learned edits on inverted-like sequences: a planted curve seen through noise of known size."""

from __future__ import annotations

import pytest
import torch

from tlgan.delta import linear_direction, train_delta
from tlgan.delta.evaluate import sequence_wander
from tlgan.delta.train import change_basis, fit_codes
from tlgan.delta.warp import BendWarp


class Stop(Exception):
    """Raised by :func:`train_interrupted_at` to cut a training short."""


def train_interrupted_at(step: int, *args, **kwargs) -> None:
    """``train_delta(*args, **kwargs)``, stopped when it reaches ``step`` (its checkpoints stay)."""

    def stop(at):
        if at == step:
            raise Stop

    with pytest.raises(Stop):
        train_delta(*args, on_step=stop, **kwargs)


DIM = 32
STEPS = torch.linspace(-2.0, 2.0, 7)
#: Standard deviation of the noise added to every coordinate of every training and test latent:
#: a wander of norm about 0.4 * sqrt(32) = 2.3 between the images of one sequence, as large as
#: two steps of the change (the inverted toyfaces sequences wander by about 10 per step, their
#: shared change by about 3.5).
NOISE = 0.4
SETTINGS = dict(steps=800, batch_size=64, lr=3e-3, hidden=64, delta_dim=2, progress=False)


def bent_sequences(k: int, seed: int, strength: float = 0.5, dim: int = DIM):
    """K clean sequences whose world path is straight (coordinate 0 from -2 to 2), seen in the
    warped latent u = warp^-1(z) where coordinate 0 bends into coordinate 1: (K, 7, DIM)."""
    eye = torch.eye(dim, dtype=torch.float64)
    warp = BendWarp(eye[:1], eye[1], strength)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(k, 1, dim, generator=g).expand(k, len(STEPS), dim).clone()
    z[:, :, 0] = STEPS[None]
    return warp.inverse(z.reshape(-1, dim)).reshape(k, len(STEPS), dim)


def planted_errors(tmp_path, code_latents=None, **settings) -> tuple[float, float]:
    """Mean latent error of the learned edit and of the least-squares line over every ordered pair
    of steps of 20 noisy held-out sequences, trained on 10 noisy sequences.

    The noise is drawn once per image, as an inversion's error: the target of the change i -> j
    of a held-out face is its noisy start plus the clean change, the edit's input its noisy start.
    The codes are fitted on the noisy training latents, or on ``code_latents(model, train, steps)``
    when given (as the benchmark fits them)."""
    g = torch.Generator().manual_seed(7)
    train_clean, test_clean = bent_sequences(10, seed=0), bent_sequences(20, seed=1)
    train = train_clean + NOISE * torch.randn(train_clean.shape, generator=g)
    test = test_clean + NOISE * torch.randn(test_clean.shape, generator=g)
    model = train_delta([train], tmp_path, values=[STEPS.tolist()], **{**SETTINGS, **settings})
    seen = train if code_latents is None else code_latents(model, train, STEPS.double())
    k, n, d = test.shape
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    ii, jj = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    starts, ends = seen[:, ii].transpose(0, 1), seen[:, jj].transpose(0, 1)  # (P, 10, D)
    with torch.no_grad():
        init = model.encode(starts.reshape(-1, d), ends.reshape(-1, d)).reshape(len(pairs), 10, -1).mean(1)
    codes = fit_codes(model, starts, ends, init)
    start = test[:, ii].reshape(-1, d)
    target = start + (test_clean[:, jj] - test_clean[:, ii]).reshape(-1, d)
    with torch.no_grad():
        learned = model.move(start, codes.repeat(k, 1))
    direction = linear_direction([train], [STEPS.double()])
    linear = start + (STEPS[jj] - STEPS[ii]).repeat(k)[:, None] * direction[None]
    return (
        float((learned - target).norm(dim=1).mean()),
        float((linear - target).norm(dim=1).mean()),
    )


def test_through_inversion_like_noise_the_learned_edit_still_beats_the_line(tmp_path):
    err_learned, err_linear = planted_errors(tmp_path)
    assert err_learned < 0.85 * err_linear, (err_learned, err_linear)


def test_mean_path_basis_finds_the_bend_that_the_wander_hides():
    # In 64 dimensions, with noise 0.7, the wander over 140 images is as large as the bend
    # (variance 0.59 along coordinate 1) within the sequences; the mean over the 20 sequences
    # keeps the bend and shrinks the wander.
    g = torch.Generator().manual_seed(5)
    x = bent_sequences(20, seed=0, dim=64) + 0.7 * torch.randn(20, len(STEPS), 64, generator=g)
    values = [STEPS.double()]
    path = change_basis([x], 2, values, path=True)
    line = change_basis([x], 2, values)
    # The bend lives in coordinate 1: the second direction of the mean path misses far less of
    # it than the second direction of every sequence's change, which wander pulls aside.
    missed_path, missed_line = 1 - float(path[1, 1]) ** 2, 1 - float(line[1, 1]) ** 2
    assert missed_path < 0.3, path[1, :4]
    assert missed_path < 0.7 * missed_line, (missed_path, missed_line)


def test_wander_separates_what_sequences_share_from_their_own_noise():
    clean = bent_sequences(10, seed=0)
    assert sequence_wander(clean)["wander"] < 1e-5
    g = torch.Generator().manual_seed(9)
    noisy = clean + NOISE * torch.randn(clean.shape, generator=g)
    w = sequence_wander(noisy)
    # Each centred latent carries noise of norm about NOISE * sqrt(DIM * (n - 1) / n), less the
    # 1 / K of it that the mean path keeps.
    expected = NOISE * (DIM * (len(STEPS) - 1) / len(STEPS) * (1 - 1 / 10)) ** 0.5
    assert abs(w["wander"] - expected) < 0.1 * expected, (w, expected)
    assert abs(w["shared_step_norm"] - sequence_wander(clean)["shared_step_norm"]) < 0.5


def test_model_folders_from_before_the_shared_decoder_still_load_and_edit(tmp_path):
    import json

    from tlgan.delta import load_delta

    x = bent_sequences(3, seed=0, dim=6)
    old = train_delta(
        [x],
        tmp_path,
        values=[STEPS.tolist()],
        steps=20,
        hidden=8,
        delta_dim=2,
        decoder="position",
        position_penalty=0.0,
        basis="line",
        progress=False,
    )
    config = json.loads((tmp_path / "model.json").read_text())
    del config["kwargs"]["decoder"]  # what model folders written before the setting hold
    (tmp_path / "model.json").write_text(json.dumps(config))
    again = load_delta(tmp_path)
    assert again.decoder_kind == "position" and not hasattr(again, "shared")
    assert torch.equal(again.edit(x[:, 0], 1.0), old.edit(x[:, 0], 1.0))


def test_checkpoints_from_before_the_new_settings_are_refused_naming_them(tmp_path):
    from tlgan.errors import TlganError
    from tlgan.io import load_tensors, save_tensors

    x = bent_sequences(3, seed=0, dim=6)
    kw = dict(values=[STEPS.tolist()], steps=20, hidden=8, delta_dim=2, checkpoint_every=10, progress=False)
    old = dict(decoder="position", position_penalty=0.0, basis="pca")

    train_interrupted_at(15, [x], tmp_path, **kw, **old)
    state = tmp_path / "checkpoint" / "state.safetensors"
    tensors, manifest = load_tensors(state)
    for key in ("decoder", "position_penalty", "basis"):  # written before these were settings
        del manifest["info"]["settings"][key]
    save_tensors(state, tensors, manifest)
    with pytest.raises(TlganError, match="decoder: checkpoint 'position', now 'both'"):
        train_delta([x], tmp_path, resume=True, **kw)
    resumed = train_delta([x], tmp_path, resume=True, **kw, **old)
    assert resumed.info["training"]["resumed_from"] == 10


class _LinearGenerator(torch.nn.Module):
    """A stand-in for a generator whose image depends on 4 of 12 latent directions (8 x 8 RGB)."""

    name = "linear-toy"
    device = torch.device("cpu")
    img_resolution = 8

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(11)
        mix = torch.zeros(12, 3 * 8 * 8)
        mix[:4] = 0.3 * torch.randn(4, 3 * 8 * 8, generator=g)
        self.register_buffer("mix", mix)

    def synthesize(self, latents, space="z"):
        return torch.tanh(latents @ self.mix).reshape(-1, 3, 8, 8)


def test_joint_inversion_removes_the_wander_the_images_do_not_see():
    from tlgan.delta.joint import joint_invert
    from tlgan.inversion.encoder import psnr_db

    G = _LinearGenerator()
    g = torch.Generator().manual_seed(4)
    k, n = 6, len(STEPS)
    truth = torch.randn(k, 1, 12, generator=g).expand(k, n, 12).clone()
    truth[:, :, 0] = STEPS[None]  # the factor moves coordinate 0, which the images see
    images = G.synthesize(truth.reshape(-1, 12)).reshape(k, n, 3, 8, 8)
    # Per-image inversions: right where the images look, anywhere where they do not.
    start = truth.clone()
    start[:, :, 4:] += 1.5 * torch.randn(k, n, 8, generator=g)
    start[:, :, :4] += 0.05 * torch.randn(k, n, 4, generator=g)
    before = sequence_wander(start)["wander"]
    result = joint_invert(G, images, start, STEPS, rank=2, steps=150, lr=0.02, prior_weight=0.0)
    after = sequence_wander(result.latents)["wander"]
    assert after < 0.4 * before, (after, before)  # the per-image wander stays where it was
    psnr_before = psnr_db(G.synthesize(start.reshape(-1, 12)), images.flatten(0, 1)).mean()
    assert float(result.psnr_db.mean()) > float(psnr_before) - 0.5, (result.psnr_db.mean(), psnr_before)


def test_cli_eval_over_seeds_and_joint_sequences(tmp_path):
    import json

    import numpy as np
    from click.testing import CliRunner

    from tlgan.cli import cli

    args = ["delta", "eval", "--factors", "yaw", "--train-identities", "2", "--test-identities", "1"]
    args += ["--steps", "3", "--inversion-steps", "0", "--train-steps", "20", "--seeds", "0,1"]
    args += ["--joint-rank", "1", "--joint-steps", "3", "--work", str(tmp_path / "work"), "--json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    assert result["train_seeds"] == [0, 1] and result["joint_rank"] == 1
    entry = result["factors"]["yaw"]
    best = entry["best"]
    by_seed = best["learned"]["by_seed"]["psnr_db"]
    assert len(by_seed) == 2 and by_seed[0] != by_seed[1]  # two trainings, two results
    assert best["learned"]["psnr_db"] == pytest.approx(np.mean(by_seed), abs=1e-3)
    assert best["learned"]["spread"]["psnr_db"] == pytest.approx(np.std(by_seed, ddof=1), abs=1e-3)
    assert best["gain_db"] == pytest.approx(np.mean(best["gain_db_by_seed"]), abs=2e-3)
    # The joint inversion shares one path direction: the training sequences keep no wander of their own
    # beyond what one direction holds, while the per-image inversions had plenty.
    assert entry["train_wander"]["wander"] < entry["train_wander_per_image"]["wander"]
    assert (tmp_path / "work" / "yaw" / "train" / "latents-joint.safetensors").is_file()
    assert len(list((tmp_path / "work" / "yaw").glob("model-2-seed*-joint1x3"))) == 2
