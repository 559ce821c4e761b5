"""The calibrated blend schedule of translation models: equal steps of the amount, equal shares of the edit."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from distill_fixtures import teacher_generator
from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.translate import (
    BlendSchedule,
    TranslationModel,
    TranslationNet,
    calibrate_translation,
    load_translation,
    train_translation,
    translate,
)
from tlgan.translate.network import apply_blend
from tlgan.translate.schedule import calibrate_schedule, edit_progress, monotone_progress
from tlgan.translate.train import calibration_set


def _share(images: torch.Tensor, start: torch.Tensor, full: torch.Tensor) -> float:
    """The pooled share of the full edit ``full - start`` that ``images`` draw (the schedule's p)."""
    d = (full - start).double()
    return float(((images - start).double() * d).sum() / d.pow(2).sum())


def test_the_table_is_strictly_increasing_from_0_to_1_whatever_was_measured():
    blend = np.linspace(0, 1, 9)
    raw = np.array([0.02, -0.01, 0.05, 0.04, 0.3, 1.2, 0.9, 0.95, 0.97])  # noise, a dip, an overshoot
    table = monotone_progress(blend, raw)
    assert table[0] == 0.0 and table[-1] == 1.0
    assert (np.diff(table) > 0).all()
    # Where the measurement already rose, the table keeps it (up to the strictness mix).
    assert abs(table[4] - 0.3) < 2e-3
    schedule = BlendSchedule(tuple(blend), tuple(table))
    assert schedule.blend_at(0.0) == 0.0 and schedule.blend_at(1.0) == 1.0
    # Outside [0, 1] the blend is linear in the amount, as without a schedule.
    assert schedule.blend_at(1.5) == 1.5 and schedule.blend_at(-0.5) == -0.5
    with pytest.raises(TlganError, match="strictly increasing"):
        BlendSchedule((0.0, 0.5, 1.0), (0.0, 1.0, 1.0))
    with pytest.raises(TlganError, match="from blend 0 at progress 0"):
        BlendSchedule((0.0, 0.5, 1.0), (0.0, 0.4, 0.9))


def test_the_schedule_inverts_a_known_progress_curve():
    # A "network" whose blend a draws the share a**3 of a fixed change: p(a) = a**3 exactly.
    torch.manual_seed(0)
    images = torch.rand(6, 3, 8, 8) * 2 - 1
    change = torch.randn(6, 3, 8, 8) * 0.1

    def forward(a: float, x: torch.Tensor) -> torch.Tensor:
        return x + a**3 * change[: len(x)]

    raw = edit_progress(forward, images, np.array([0.0, 0.5, 1.0]))
    assert np.allclose(raw, [0.0, 0.125, 1.0], atol=1e-12)
    schedule = calibrate_schedule(forward, images, points=65)
    for t in (0.1, 0.25, 0.5, 0.75, 0.9):
        a = schedule.blend_at(t)
        assert abs(a - t ** (1 / 3)) < 0.02, (t, a)  # linear interpolation in a 65-point table
        assert abs(_share(forward(a, images), images, forward(1.0, images)) - t) < 0.01
    with pytest.raises(TlganError, match="no edit"):
        edit_progress(lambda a, x: x, images, np.array([0.0, 1.0]))


@pytest.fixture(scope="module")
def generator():
    return teacher_generator()


@pytest.fixture(scope="module")
def trained(generator, tmp_path_factory):
    direction = torch.zeros(2, 8)
    direction[0, 0] = 1.0
    direction[1, 1] = 1.0
    axes = FeatureAxes(direction, ["Up", "Other"], space="z")
    out = tmp_path_factory.mktemp("schedule") / "up"
    model = train_translation(
        generator,
        axes,
        "Up",
        out,
        amount=1.5,
        identity_steps=100,
        edit_steps=100,
        width=8,
        depth=2,
        batch_size=16,
        lr=3e-3,
        checkpoint_every=50,
        progress=False,
        calibration_images=32,
        calibration_points=17,
    )
    return model, out


def test_a_trained_model_is_calibrated_and_half_the_amount_draws_half_the_edit(generator, trained):
    model, out = trained
    assert model.schedule is not None and load_translation(out).schedule == model.schedule
    # Fresh images, not the calibration set.
    images = generator.synthesize(generator.sample_latents(48, seed=11)).detach()
    with torch.no_grad():
        start, full = model.identity(images), model.edited(images)
        # 0 and the trained amount are the two networks, exactly.
        for blend in ("weights", "outputs"):
            assert torch.equal(translate(images, model, 0.0, blend=blend), start)
            assert torch.equal(translate(images, model, model.amount, blend=blend), full)
        half = _share(translate(images, model, model.amount / 2, blend="weights"), start, full)
        quarter = _share(translate(images, model, model.amount / 4, blend="weights"), start, full)
        linear_half = _share(apply_blend(model.identity, model.edited, 0.5, images), start, full)
    assert abs(half - 0.5) < 0.08, half
    assert abs(quarter - 0.25) < 0.08, quarter
    # The uncalibrated blend (a = t) misses that bound on this model: weight blending is not linear.
    assert abs(linear_half - 0.5) > 0.1, linear_half


def test_a_folder_without_a_schedule_loads_and_blends_linearly_as_before(generator, trained, tmp_path):
    model, _ = trained
    old = TranslationModel(model.identity, model.edited, "Up", 1.5, {"generator": "teacher"})
    old.save(tmp_path / "old")
    config = json.loads((tmp_path / "old" / "translation.json").read_text())
    assert "blend_schedule" not in config
    again = load_translation(tmp_path / "old")
    assert again.schedule is None
    images = generator.synthesize(generator.sample_latents(4, seed=3)).detach()
    with torch.no_grad():
        assert torch.equal(
            translate(images, again, 0.6, blend="weights"),
            apply_blend(again.identity, again.edited, 0.4, images),
        )
    # A calibrated one applies another blend at the same amount.
    with torch.no_grad():
        calibrated = translate(images, model, 0.6, blend="weights")
        assert not torch.equal(calibrated, translate(images, again, 0.6, blend="weights"))
        # The default mixes the networks' images, with or without a schedule.
        assert torch.equal(translate(images, again, 0.6), translate(images, model, 0.6))
    config["blend_schedule"] = {"blend": [0.0, 1.0], "progress": [0.0, 0.5]}
    (tmp_path / "old" / "translation.json").write_text(json.dumps(config))
    with pytest.raises(TlganError, match=r"translation.json: a blend schedule must run.*calibrate"):
        load_translation(tmp_path / "old")


def test_the_output_blend_mixes_the_two_networks_images(generator, trained):
    model, _ = trained
    images = generator.synthesize(generator.sample_latents(4, seed=4)).detach()
    with torch.no_grad():
        start, full = model.identity(images), model.edited(images)
        assert torch.equal(translate(images, model, 0.0, blend="outputs"), start)
        assert torch.equal(translate(images, model, 1.5, blend="outputs"), full)
        assert torch.allclose(
            translate(images, model, 0.5, blend="outputs"), start + (full - start) / 3, atol=1e-6
        )
    with pytest.raises(TlganError, match="blend must be one of weights, outputs"):
        translate(images, model, 0.5, blend="pixels")


def test_calibrating_an_old_folder_from_the_command_line(generator, trained, tmp_path, monkeypatch):
    from click.testing import CliRunner

    import tlgan.models as models_module
    from tlgan.cli import cli

    model, _ = trained
    TranslationModel(model.identity, model.edited, "Up", 1.5, {"generator": "teacher"}).save(tmp_path / "m")
    monkeypatch.setattr(models_module, "load_generator", lambda spec, device="cpu": generator)
    args = ["train", "calibrate-translate", str(tmp_path / "m"), "--calibration-images", "8"]
    r = CliRunner().invoke(cli, [*args, "--calibration-points", "9", "--json"])
    assert r.exit_code == 0, r.output
    written = load_translation(tmp_path / "m").schedule
    assert written is not None and len(written.blend) == 9
    # The same table as calibrating in Python on the same seeded images (seed 0, no blur recorded).
    again = TranslationModel(model.identity, model.edited, "Up", 1.5)
    expected = calibrate_translation(again, calibration_set(generator, 8, 0, 0.0), points=9)
    assert written.progress == expected.progress
    r = CliRunner().invoke(cli, ["train", "calibrate-translate", str(tmp_path / "none")])
    assert isinstance(r.exception, TlganError) and "translation.json is missing" in str(r.exception)


def test_calibration_refuses_images_of_another_resolution():
    torch.manual_seed(0)
    model = TranslationModel(TranslationNet(16, 4, 2), TranslationNet(16, 4, 2), "Up", 1.0)
    with pytest.raises(TlganError, match=r"must be \(N, 3, 16, 16\)"):
        calibrate_translation(model, torch.zeros(2, 3, 32, 32))


def _mean_classifier():
    """A classifier whose logit of "Up" is 4 x the mean of the image."""
    from tlgan.models import ModuleClassifier

    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1))
    with torch.no_grad():
        head[1].weight.fill_(4.0 / (3 * 8 * 8))
        head[1].bias.zero_()
    return ModuleClassifier(head, ["Up"], input_resolution=8)


def test_continuity_tells_a_monotonic_path_from_a_dip_and_from_an_edit_that_lowers_the_score():
    from tlgan.toyfaces.translate_eval import continuity_along

    start = torch.zeros(3, 3, 8, 8)
    # Image 0 brightens steadily; image 1 brightens, dips at the middle step, ends brighter;
    # image 2 ends darker than it began (no path between its ends can rise).
    steps = [0.0, 0.25, 0.5, 0.75, 1.0]
    dips = [0.0, 0.3, 0.1, 0.8, 1.0]
    path = []
    for k in range(5):
        x = start.clone()
        x[0] += 0.4 * steps[k]
        x[1] += 0.4 * dips[k]
        x[2] -= 0.4 * steps[k]
        path.append(x)
    result = continuity_along(path, _mean_classifier(), "Up")
    assert result["monotonic_fraction"] == pytest.approx(1 / 3)
    assert result["end_rises_fraction"] == pytest.approx(2 / 3)
    assert result["monotonic_fraction_of_end_rising"] == pytest.approx(1 / 2)
    # Shares of the full change, pooled over images: (0.4^2 (s + d + s)) / (3 * 0.4^2).
    expected = [(2 * s + d) / 3 for s, d in zip(steps, dips, strict=True)]
    assert np.allclose(result["mean_edit_share"], expected)
    assert continuity_along(path, _mean_classifier(), "yaw")["monotonic_fraction"] is None
    # The logit is 4 x the mean pixel: 1.6 d for image 1, -1.6 s for image 2. Their largest
    # single falls: 0.3 -> 0.1 (0.32 logits) and each quarter step of image 2 (0.4 logits).
    dips = result["dips"]
    assert dips["faces"] == 2 and [row[0] for row in dips["per_face"]] == [1, 2]
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    assert dips["per_face"][0][2:4] == pytest.approx([sigmoid(0.48) - sigmoid(0.16), 0.32], abs=1e-4)
    assert dips["per_face"][1][2:4] == pytest.approx([sigmoid(0.0) - sigmoid(-0.4), 0.4], abs=1e-4)
    assert dips["start_probability"]["median"] == pytest.approx(0.5)
    assert dips["share_ending_below_start"] == pytest.approx(0.5)
    assert dips["share_within_tolerance"] == 0.0 and result["monotonic_within_0.01"] == pytest.approx(1 / 3)
    assert result["mean_logit"][-1] == pytest.approx((1.6 + 1.6 - 1.6) / 3, abs=1e-6)


def test_eval_translate_can_run_the_translation_alone(tmp_path):
    from click.testing import CliRunner

    from tlgan.cli import cli
    from tlgan.toyfaces import world

    axes = tmp_path / "axes.safetensors"
    FeatureAxes(world.true_directions(), list(world.ATTRIBUTES), space="z").save(axes)
    torch.manual_seed(0)
    identity, edited = TranslationNet(64, 4, 2), TranslationNet(64, 4, 2)
    with torch.no_grad():
        torch.nn.init.normal_(edited.head.weight, std=0.05)
    record = {"generator": "toyfaces-gan", "axes": str(axes)}
    TranslationModel(identity.eval(), edited.eval(), "Eyeglasses", 2.0, record).save(
        tmp_path / "m" / "glasses"
    )
    args = [
        "toyfaces",
        "eval-translate",
        "--models",
        str(tmp_path / "m"),
        "--n",
        "4",
        "--routes",
        "translate",
    ]
    r = CliRunner().invoke(cli, [*args, "--blend", "outputs", "--json"])
    assert r.exit_code == 0, r.output
    entry = json.loads(r.output)["attributes"]["Eyeglasses"]
    assert "invert_edit" not in entry and "tuned_edit" not in entry and "translate" in entry
    # Mixing the two networks' images draws exactly k / 4 of the change at amount k A / 4.
    assert np.allclose(entry["continuity"]["mean_edit_share"], [0, 0.25, 0.5, 0.75, 1], atol=1e-6)
    assert entry["true_edit_continuity"]["monotonic_fraction"] is not None
    # The baselines still run by default (tiny settings: the route, not its accuracy).
    full = ["toyfaces", "eval-translate", "--models", str(tmp_path / "m"), "--n", "2"]
    r = CliRunner().invoke(cli, [*full, "--invert-steps", "1", "--tune-steps", "1", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    entry = result["attributes"]["Eyeglasses"]
    assert {"invert_edit", "tuned_edit", "speedup_over_invert_edit"} <= set(entry)
    assert result["invert_seconds_per_image"] > 0 and result["blend"] == "outputs"
