"""The translation route: identity and edited networks trained on a generator's own edit pairs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distill_fixtures import teacher_generator
from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.translate import TranslationNet, blend, load_translation, train_translation, translate
from tlgan.translate import train as train_module


@pytest.fixture(scope="module")
def generator():
    return teacher_generator()


@pytest.fixture(scope="module")
def axes():
    direction = torch.zeros(2, 8)
    direction[0, 0] = 1.0  # "Up": the first latent coordinate
    direction[1, 1] = 1.0
    return FeatureAxes(direction, ["Up", "Other"], space="z")


SMALL = dict(width=8, depth=2, batch_size=16, lr=3e-3, checkpoint_every=5, progress=False)


@pytest.fixture(scope="module")
def trained(generator, axes, tmp_path_factory):
    out = tmp_path_factory.mktemp("translate") / "up"
    model = train_translation(
        generator, axes, "Up", out, amount=1.5, identity_steps=150, edit_steps=150, **SMALL
    )
    return model, out


def test_identity_network_reproduces_its_inputs_and_edited_one_moves_toward_the_edit(
    generator, axes, trained
):
    model, _ = trained
    z = generator.sample_latents(64, seed=5)
    with torch.no_grad():
        source = generator.synthesize(z)
        target = generator.synthesize(z + 1.5 * axes["Up"])
        untrained = TranslationNet(16, 8, 2)
        torch.nn.init.normal_(untrained.head.weight, std=0.05)
        identity_error = (model.identity(source) - source).abs().mean()
        baseline = (untrained(source) - source).abs().mean()
        edited = model.edited(source)
    assert identity_error < 0.02, identity_error  # [-1, 1] images: under 1 % of the range
    assert identity_error < 0.3 * baseline
    # The translation learned from pairs beats leaving the image alone clearly.
    assert (edited - target).abs().mean() < 0.7 * (source - target).abs().mean()


def test_amount_zero_is_the_identity_network_and_the_trained_amount_the_edited_one(generator, trained):
    model, out = trained
    images = generator.synthesize(generator.sample_latents(5, seed=2)).detach()
    with torch.no_grad():
        assert torch.equal(translate(images, model, 0.0), model.identity(images))
        assert torch.equal(translate(images, model, model.amount), model.edited(images))
        half = translate(images, model, model.amount / 2)
    state = blend(model.identity, model.edited, 0.5)
    key = "head.weight"
    expected = 0.5 * (model.identity.state_dict()[key] + model.edited.state_dict()[key])
    assert torch.allclose(state[key], expected, atol=1e-7)
    assert not torch.equal(half, translate(images, model, 0.0))
    # The folder loads back to the same networks.
    again = load_translation(out)
    assert again.attribute == "Up" and again.amount == 1.5
    assert torch.equal(translate(images, again, 0.75), translate(images, model, 0.75))


def test_a_model_refuses_images_of_another_resolution(trained):
    model, _ = trained
    with pytest.raises(TlganError, match=r"works at 16 x 16 px.*resize them to 16 px"):
        translate(torch.zeros(1, 3, 64, 64), model, 1.0)
    with pytest.raises(TlganError, match="amount"):
        translate(torch.zeros(1, 3, 16, 16), model, float("nan"))


def interrupted_at(step: int, *args, **kwargs) -> None:
    """train_translation(*args, **kwargs), interrupted (KeyboardInterrupt) when it asks for step ``step``'s latents."""
    real = train_module.step_latents

    def interrupting(generator, space, batch_size, seed, at):
        if at == step:
            raise KeyboardInterrupt
        return real(generator, space, batch_size, seed, at)

    train_module.step_latents = interrupting
    try:
        with pytest.raises(KeyboardInterrupt):
            train_translation(*args, **kwargs)
    finally:
        train_module.step_latents = real


@pytest.mark.parametrize("stop", [7, 13])  # in the identity phase, and in the edit phase
def test_an_interrupted_training_resumes_bit_for_bit(generator, axes, tmp_path, stop):
    kwargs = dict(amount=1.0, identity_steps=10, edit_steps=8, blur=1.0, blend_fraction=0.5, **SMALL)
    straight = train_translation(generator, axes, "Up", tmp_path / "straight", **kwargs)
    interrupted_at(stop, generator, axes, "Up", tmp_path / "resumed", **kwargs)
    with pytest.raises(TlganError, match="--resume"):
        train_translation(generator, axes, "Up", tmp_path / "resumed", **kwargs)
    resumed = train_translation(generator, axes, "Up", tmp_path / "resumed", resume=True, **kwargs)
    for a, b in ((straight.identity, resumed.identity), (straight.edited, resumed.edited)):
        for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), k
    with pytest.raises(TlganError, match="other settings"):
        train_translation(
            generator, axes, "Up", tmp_path / "resumed", resume=True, **{**kwargs, "amount": 2.0}
        )


def test_a_checkpoint_from_before_the_weighted_loss_and_blur_resumes_without_them(generator, axes, tmp_path):
    kwargs = dict(
        amount=1.0, identity_steps=4, edit_steps=8, change_weight=0.0, attribute_weight=0.0, blur=0.0, **SMALL
    )
    straight = train_translation(generator, axes, "Up", tmp_path / "straight", **kwargs)
    interrupted_at(7, generator, axes, "Up", tmp_path / "old", **kwargs)
    manifest_path = tmp_path / "old" / "checkpoint" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for key in (
        "change_weight",
        "attribute_weight",
        "blur",
        "blend_fraction",
        "monotone_weight",
        "monotone_margin",
        "edited_from",
    ):  # what an older version did not record
        del manifest["info"]["settings"][key]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(TlganError, match="change_weight: checkpoint 0.0, now 4.0"):
        train_translation(
            generator, axes, "Up", tmp_path / "old", resume=True, **{**kwargs, "change_weight": 4.0}
        )
    resumed = train_translation(generator, axes, "Up", tmp_path / "old", resume=True, **kwargs)
    for (k, x), (_, y) in zip(
        straight.edited.state_dict().items(), resumed.edited.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), k


def test_bad_requests_are_named(generator, axes, tmp_path):
    with pytest.raises(TlganError, match="Upp"):
        train_translation(generator, axes, "Upp", tmp_path / "a", **SMALL)
    with pytest.raises(TlganError, match="positive"):
        train_translation(generator, axes, "Up", tmp_path / "b", amount=-1.0, **SMALL)
    with pytest.raises(TlganError, match="both translated and locked"):
        train_translation(generator, axes, "Up", tmp_path / "c", locks=["Up"], **SMALL)
    with pytest.raises(TlganError, match="translation.json is missing"):
        load_translation(tmp_path)


def test_the_world_mask_and_the_scores_see_only_what_they_should():
    from tlgan.toyfaces.translate_eval import edited_part, masked_psnr_db, outside_change

    source = torch.zeros(2, 3, 16, 16)
    target = source.clone()
    target[:, :, 4:6, 4:6] = 0.5  # the "edit" redraws a 2 x 2 patch
    mask = edited_part(source, target, dilate=1)
    assert mask.sum() == 2 * 16 and bool(mask[0, 0, 3:7, 3:7].all())  # 4 x 4 after growing by 1 px
    assert torch.equal(outside_change(target, source, mask), torch.zeros(2))
    moved_outside = target.clone()
    moved_outside[:, :, 12, 12] = 1.0  # one pixel outside changes by 1 (of 2) in every channel
    assert torch.allclose(outside_change(moved_outside, source, mask), torch.full((2,), 0.5 / (256 - 16)))
    # Inside the part the exact edit scores far above leaving the image alone.
    assert (masked_psnr_db(target, target, mask) > 100).all()
    assert torch.allclose(
        masked_psnr_db(source, target, mask), torch.full((2,), 10 * math.log10(4 / (0.25 / 4)))
    )


def test_cli_trains_and_applies_a_translation(tmp_path):
    from click.testing import CliRunner

    from tlgan.cli import cli
    from tlgan.imaging import save_image

    runner = CliRunner()
    axes = tmp_path / "axes.safetensors"
    from tlgan.toyfaces import world

    FeatureAxes(world.true_directions(), list(world.ATTRIBUTES), space="z").save(axes)
    model = tmp_path / "glasses"
    args = f"train translate --attr Eyeglasses --axes {axes} --out {model} --identity-steps 2 --edit-steps 2"
    args += (
        " --width 4 --batch-size 2 --feature-weight 0 --calibration-images 4 --calibration-points 5 --json"
    )
    r = runner.invoke(cli, args.split())
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["settings"]["edit_steps"] == 2
    assert len(load_translation(model).schedule.blend) == 5  # calibrated after training
    tuned = tmp_path / "glasses-monotone"
    more = (
        f"train translate --attr Eyeglasses --axes {axes} --edited-from {model} --out {tuned} --edit-steps 2"
    )
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    for i in range(3):  # any size: centre-cropped and resized to the generator's
        save_image(torch.rand(3, 90, 70) * 2 - 1, unlabelled / f"{i}.png")
    more += " --width 4 --batch-size 2 --monotone-weight 0.5 --calibration-images 0 --json"
    more += f" --monotone-points 2 --monotone-photos {unlabelled}"
    r = runner.invoke(cli, more.split())
    assert r.exit_code == 0, r.output
    record = json.loads(r.output)
    settings = record["settings"]
    assert settings["monotone_weight"] == 0.5 and settings["edited_from"] == str(model)
    assert settings["monotone_points"] == 2 and settings["monotone_images"]["count"] == 3
    assert record["monotone_photos"] == [str(unlabelled)]
    photo = tmp_path / "photos"
    photo.mkdir()
    save_image(torch.zeros(3, 100, 80), photo / "a.png")  # any size: centre-cropped and resized
    (photo / "broken.png").write_bytes(b"not an image")
    r = runner.invoke(
        cli, f"translate {photo} --model {model} --amount 1 --out {tmp_path / 'out'} --json".split()
    )
    assert r.exit_code == 1  # the broken photo is reported, the other one is done
    done = json.loads(r.output[r.output.index("{") :])
    assert [Path(row["out"]).name for row in done["images"]] == ["a.png"] and len(done["failed"]) == 1
    assert (tmp_path / "out" / "a.png").is_file()


def test_change_weighting_moves_the_l1_optimum_toward_drawing_a_thin_edit():
    from tlgan.translate.train import edit_loss_weights, weighted_l1

    # One pixel of 10 images: 3 pairs draw a stroke there (0 -> 1), 7 leave it alone. A plain L1
    # is smallest when the network draws nothing (the median); weighting the changed pixels
    # makes drawing the stroke the better answer.
    source = torch.zeros(10, 3, 4, 4)
    target = source.clone()
    target[:3, :, 1, 1] = 1.0
    plain = edit_loss_weights(source, target, 0.0)
    assert torch.equal(plain, torch.ones(10, 1, 4, 4))
    assert torch.allclose(weighted_l1(target * 0.5, target, plain), F.l1_loss(target * 0.5, target))
    weights = edit_loss_weights(source, target, 4.0)
    # Normalised by the batch's mean change: the same weights whatever the size of the edit.
    assert torch.allclose(weights, edit_loss_weights(source, 0.25 * target, 4.0))
    nothing, stroke = source.clone(), source.clone()
    stroke[:, :, 1, 1] = 1.0
    assert weighted_l1(nothing, target, plain) < weighted_l1(stroke, target, plain)
    assert weighted_l1(stroke, target, weights) < weighted_l1(nothing, target, weights)


def test_blurring_pairs_keeps_flat_images_and_damps_a_checkerboard_alike():
    from tlgan.train.common import step_generator
    from tlgan.translate.train import blur_pairs

    flat = torch.full((4, 3, 16, 16), 0.3)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None]) % 2).float().expand(4, 3, 16, 16) - 0.5
    a, b = blur_pairs(flat, flat + checker, 2.0, step_generator(0, 0, 22))
    assert torch.allclose(a, flat)
    # Both images get the same blur: the pair's difference is the blurred checkerboard, far weaker.
    assert torch.allclose(b - a, blur_pairs(checker, checker, 2.0, step_generator(0, 0, 22))[0], atol=1e-6)
    assert (b - a).abs().mean() < 0.5 * checker.abs().mean()
    same = blur_pairs(flat, checker, 0.0, step_generator(0, 0, 22))
    assert same[0] is flat and same[1] is checker


def test_the_blended_forward_is_the_blend_translate_uses_and_trains_only_the_edited_weights():
    from tlgan.train.common import step_generator
    from tlgan.translate.network import apply_blend
    from tlgan.translate.train import blend_amount, blended_forward

    torch.manual_seed(0)
    identity, edited = TranslationNet(16, 4, 2), TranslationNet(16, 4, 2)
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    out = blended_forward(identity, edited, 0.3, images)
    assert torch.allclose(out, apply_blend(identity, edited, 0.3, images), atol=1e-6)
    out.sum().backward()
    assert all(p.grad is None for p in identity.parameters())
    assert all(p.grad is not None for p in edited.parameters())
    draws = [blend_amount(0.25, step_generator(0, k, 23)) for k in range(400)]
    assert blend_amount(0.0, step_generator(0, 0, 23)) == 1.0
    blended = [a for a in draws if a != 1.0]
    assert 0.18 < len(blended) / len(draws) < 0.32 and all(0 <= a < 1 for a in blended)


def test_the_attribute_loss_is_zero_when_the_classifier_agrees_and_grows_with_the_gap():
    from tlgan.models import ModuleClassifier
    from tlgan.translate.train import attribute_loss

    # A classifier whose logit of "Up" is 4 x the mean of the image.
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 1))
    with torch.no_grad():
        head[1].weight.fill_(4.0 / (3 * 16 * 16))
        head[1].bias.zero_()
    classifier = ModuleClassifier(head, ["Up"], input_resolution=16)
    target = torch.full((2, 3, 16, 16), 0.5)
    with torch.no_grad():
        assert abs(float(attribute_loss(classifier, target, target, 0))) < 1e-6
        near = attribute_loss(classifier, torch.full_like(target, 0.3), target, 0)
        far = attribute_loss(classifier, torch.full_like(target, -0.5), target, 0)
    assert 0 < near < far


@pytest.fixture
def photo_model(tmp_path):
    """A 64 px model whose edited network visibly changes a face (random, untrained)."""
    from tlgan.translate import TranslationModel

    torch.manual_seed(3)
    identity, edited = TranslationNet(64, 4, 2), TranslationNet(64, 4, 2)
    with torch.no_grad():
        identity.head.weight.zero_()
        identity.head.bias.zero_()
        torch.nn.init.normal_(edited.head.weight, std=0.2)
    TranslationModel(identity.eval(), edited.eval(), "Up", 1.0, {}).save(tmp_path / "model")
    return tmp_path / "model"


def test_cli_translates_an_aligned_face_and_pastes_the_change_back(photo_model, tmp_path):
    pytest.importorskip("dlib", reason="face alignment needs the align extra")
    data = pytest.importorskip("skimage.data", reason="the real photo comes with scikit-image")
    import numpy as np
    from click.testing import CliRunner
    from PIL import Image

    from tlgan.alignment import FaceTransform, paste_mask
    from tlgan.cli import cli

    photo = data.astronaut()
    Image.fromarray(photo).save(tmp_path / "astro.png")
    runner = CliRunner()
    r = runner.invoke(
        cli, ["align", str(tmp_path / "astro.png"), "--size", "64", "--out", str(tmp_path / "a")]
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "t"
    args = ["translate", str(tmp_path / "astro.png"), "--model", str(photo_model), "--amount", "1"]
    r = runner.invoke(cli, [*args, "--align", "ffhq", "--paste-back", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    # The network saw exactly the face `tlgan align` cuts.
    aligned = np.asarray(Image.open(out / "astro.aligned.png"))
    assert np.array_equal(aligned, np.asarray(Image.open(tmp_path / "a" / "astro.png")))
    model = load_translation(photo_model)
    source = torch.from_numpy(aligned.copy()).permute(2, 0, 1).float()[None] / 127.5 - 1.0
    from tlgan.imaging import to_uint8

    expected = to_uint8(translate(source, model, 1.0))[0]
    assert np.array_equal(np.asarray(Image.open(out / "astro.png")), expected)
    # Pasted back: the photo's own pixels outside the face square, the change inside it.
    transform = FaceTransform.load(out / "astro.align.json")
    mask, (x0, y0) = paste_mask(transform.resized(64))
    inside = np.zeros(photo.shape[:2], bool)
    inside[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]] = mask > 0
    pasted = np.asarray(Image.open(out / "astro.photo.png"))
    assert pasted.shape == photo.shape and np.array_equal(pasted[~inside], photo[~inside])
    assert (np.abs(pasted.astype(int) - photo.astype(int))[inside] > 8).mean() > 0.1
    # At amount 0 (the identity network, here exactly the identity) the photo comes back unchanged.
    r = runner.invoke(cli, [*args[:-1], "0", "--align", "ffhq", "--paste-back", "--out", str(tmp_path / "z")])
    assert r.exit_code == 0, r.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "z" / "astro.photo.png")), photo)


def test_cli_align_without_dlib_or_without_align_says_what_to_do(photo_model, tmp_path, monkeypatch):
    import sys

    from click.testing import CliRunner

    from tlgan.cli import cli
    from tlgan.imaging import save_image

    save_image(torch.zeros(3, 64, 64), tmp_path / "a.png")
    args = ["translate", str(tmp_path / "a.png"), "--model", str(photo_model), "--amount", "1"]
    r = CliRunner().invoke(cli, [*args, "--paste-back", "--out", str(tmp_path / "o")])
    assert isinstance(r.exception, TlganError) and "add --align ffhq" in str(r.exception)
    monkeypatch.setitem(sys.modules, "dlib", None)
    r = CliRunner().invoke(cli, [*args, "--align", "ffhq", "--out", str(tmp_path / "o")])
    assert isinstance(r.exception, TlganError) and "pip install 'tlgan[align]'" in str(r.exception)
    assert not (tmp_path / "o").exists()
