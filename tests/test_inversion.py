"""Inversion: latent optimisation, the encoder, image reading, and the commands.

Everything runs on tiny generators: a fixed random MLP at 16 px whose images vary a lot
with z (so a planted latent is identifiable), and tiny DCGAN / classifier networks.
"""

from __future__ import annotations

import io
import json
import logging
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tlgan.errors import TlganError
from tlgan.inversion import LatentEncoder, invert, invert_image, load_encoder, optimize_latents
from tlgan.inversion.encoder import psnr_db
from tlgan.inversion.optimize import shell_prior
from tlgan.models.base import ModuleGenerator
from tlgan.models.networks import AttributeClassifierNet, DCGANGenerator
from tlgan.train.encoder import train_encoder

TINY_FACTORY = """
import torch
from torch import nn
from tlgan.models.base import ModuleGenerator


def make(z_dim=16, res=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(z_dim, 64), nn.Tanh(), nn.Linear(64, 3 * res * res), nn.Tanh(),
                        nn.Unflatten(1, (3, res, res)))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 1.5 / m.in_features ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return ModuleGenerator(net, z_dim=z_dim, name="tiny").eval()
"""


def tiny_generator(z_dim: int = 16, res: int = 16, seed: int = 0) -> ModuleGenerator:
    namespace: dict = {}
    exec(TINY_FACTORY, namespace)  # the same factory the CLI tests load from a file
    return namespace["make"](z_dim, res, seed)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G():
    return tiny_generator()


def planted(G, n=6, seed=1):
    z = G.sample_latents(n, seed=seed)
    with torch.no_grad():
        return z, G.synthesize(z)


# ----------------------------------------------------------------------------------------
# Optimisation
# ----------------------------------------------------------------------------------------


def test_optimisation_recovers_planted_latents(G):
    z, x = planted(G)
    init = G.sample_latents(len(z), seed=2)
    latents, info = optimize_latents(G, x, init, steps=300, lr=0.05, prior_weight=0.0)
    with torch.no_grad():
        before = psnr_db(G.synthesize(init), x)
        after = psnr_db(G.synthesize(latents), x)
    assert before.max() < 15.0  # random latents make very different images
    assert after.min() > 33.0  # the planted image is found again
    assert after.mean() > before.mean() + 25.0
    assert torch.all(info["loss"] < 0.01 * info["init_loss"])
    assert info["history"][-1] < info["history"][0]
    # The image is reproduced because the latent is: the tiny MLP is nearly injective.
    assert torch.nn.functional.cosine_similarity(latents, z).min() > 0.95


def test_optimisation_with_classifier_features_on_a_dcgan():
    torch.manual_seed(0)
    G = DCGANGenerator(z_dim=32, resolution=16, width=8).eval()
    # A random DCGAN barely varies; widen its output range so images differ clearly.
    with torch.no_grad():
        G.to_rgb.weight.mul_(20.0)
    F = AttributeClassifierNet(["A", "B"], resolution=16, width=4).eval()
    z, x = planted(G, n=4)
    init = G.sample_latents(4, seed=5)
    latents, info = optimize_latents(G, x, init, classifier=F, feature_weight=0.5, steps=150, lr=0.05)
    with torch.no_grad():
        gain = psnr_db(G.synthesize(latents), x) - psnr_db(G.synthesize(init), x)
    assert gain.min() > 10.0
    assert torch.all(info["loss"] < 0.05 * info["init_loss"])
    # The models are left as they were found: trainable and with no gradients accumulated.
    assert all(p.requires_grad and p.grad is None for p in list(G.parameters()) + list(F.parameters()))


def test_best_latent_kept_and_early_stop_at_the_optimum(G):
    z, x = planted(G, n=3)
    latents, info = optimize_latents(G, x, z, steps=500, lr=0.05, prior_weight=0.0, patience=5)
    # Starting at the exact answer nothing improves: it stops early and returns the start.
    assert info["stopped_early"] and info["steps"] < 100
    assert torch.equal(latents, z)
    # Never worse than the start, whatever the start.
    init = G.sample_latents(3, seed=9)
    _, info = optimize_latents(G, x, init, steps=7, lr=5.0, prior_weight=0.0)  # absurd lr: steps are bad
    assert torch.all(info["loss"] <= info["init_loss"])


def test_prior_pulls_the_norm_to_the_shell(G):
    d = G.z_dim
    assert float(shell_prior(torch.full((1, d), 1.0))) == 0.0  # |z|^2 = D exactly
    assert float(shell_prior(torch.zeros(1, d))) == pytest.approx(1.0)  # (0 - D)^2 / D^2
    _, x = planted(G, n=2)
    init = 0.2 * G.sample_latents(2, seed=3)
    latents, _ = optimize_latents(
        G, x, init, steps=300, lr=0.05, pixel_weight=0.0, gradient_weight=0.0, prior_weight=1.0, tol=0.0
    )
    assert torch.allclose(latents.pow(2).sum(1), torch.full((2,), float(d)), rtol=0.02)


def test_images_are_independent_of_their_batch(G):
    _, x = planted(G, n=4)
    init = G.sample_latents(4, seed=4)
    together, _ = optimize_latents(G, x, init, steps=40)
    alone, _ = optimize_latents(G, x[2:3], init[2:3], steps=40)
    assert torch.allclose(together[2], alone[0], atol=1e-4)


def test_bad_targets_are_explained(G):
    z, x = planted(G, n=2)
    with pytest.raises(TlganError, match=r"\[-1, 1\]"):
        optimize_latents(G, x * 127.5 + 127.5, z, steps=1)
    with pytest.raises(TlganError, match="2 target images but 1"):
        optimize_latents(G, x, z[:1], steps=1)
    with pytest.raises(TlganError, match="size 16"):
        optimize_latents(G, x, torch.zeros(2, 8), steps=1)


# ----------------------------------------------------------------------------------------
# The encoder
# ----------------------------------------------------------------------------------------


def test_encoder_training_lowers_the_loss_and_round_trips(G, tmp_path):
    summary = train_encoder(G, tmp_path, steps=60, batch_size=16, lr=2e-3, width=8, progress=False)
    history = json.loads((tmp_path / "encoder-training.json").read_text())["history"]
    first = np.mean([h["latent"] for h in history[:5]])
    last = np.mean([h["latent"] for h in history[-5:]])
    assert last < 0.7 * first
    assert summary["eval"]["psnr_db_mean"] > 12.0
    encoder = load_encoder(tmp_path, generator=G)
    assert isinstance(encoder, LatentEncoder)
    _, x = planted(G, n=3)
    encoder2 = load_encoder(tmp_path)
    with torch.no_grad():
        assert torch.equal(encoder(x), encoder2(x))
    # The encoder's guess is a better start than a random search, and optimisation improves on it.
    result = invert(G, x, encoder=encoder, steps=40, prior_weight=0.0)
    assert torch.all(result.psnr_db >= result.encoder_psnr_db - 1e-3)
    assert result.psnr_db.mean() > result.encoder_psnr_db.mean() + 3.0


def test_encoder_training_resumes_exactly(G, tmp_path):
    kw = dict(steps=12, batch_size=8, lr=2e-3, width=4, checkpoint_every=6, progress=False)
    train_encoder(G, tmp_path / "straight", **kw)
    # An interrupted run: killed during step 8 (after the checkpoint at step 6), then resumed.
    flaky = tiny_generator()
    draw = flaky.sample_latents_at

    def interrupted(indices, seed=0, space="z"):
        if min(indices) >= 7 * kw["batch_size"]:
            raise KeyboardInterrupt
        return draw(indices, seed=seed, space=space)

    flaky.sample_latents_at = interrupted
    with pytest.raises(KeyboardInterrupt):
        train_encoder(flaky, tmp_path / "split", **kw)
    assert not (tmp_path / "split" / "encoder.json").exists()
    train_encoder(G, tmp_path / "split", **kw, resume=True)
    a = load_encoder(tmp_path / "straight").state_dict()
    b = load_encoder(tmp_path / "split").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    with pytest.raises(TlganError, match="resume"):
        train_encoder(G, tmp_path / "straight", **kw)  # would overwrite a checkpoint
    with pytest.raises(TlganError, match="different settings"):
        train_encoder(G, tmp_path / "split", **{**kw, "lr": 1e-2}, resume=True)


def test_encoder_checkpoint_sits_beside_a_generator_training_checkpoint(G, tmp_path):
    from tlgan.train.checkpoint import has_checkpoint, save_checkpoint

    # `tlgan train encoder --out my-gan` trains into the generator's own folder, which may still
    # hold the generator's training checkpoint: the two must not be taken for each other.
    save_checkpoint(tmp_path, step=5, modules={"G": torch.nn.Linear(2, 2)}, optimizers={})
    train_encoder(G, tmp_path, steps=2, batch_size=4, width=4, checkpoint_every=1, progress=False)
    assert has_checkpoint(tmp_path) and has_checkpoint(tmp_path / "encoder-checkpoint")
    assert load_encoder(tmp_path, generator=G) is not None
    # A checkpoint in the encoder's own earlier format is named, not silently restarted or misread.
    old = tmp_path / "old" / "encoder-checkpoint"
    old.mkdir(parents=True)
    (old / "state.json").write_text("{}")
    with pytest.raises(TlganError, match="earlier tlgan version"):
        train_encoder(G, tmp_path / "old", steps=2, batch_size=4, width=4, resume=True, progress=False)


def test_encoder_learns_from_real_images_through_reconstruction(G, tmp_path):
    _, real = planted(G, n=16, seed=7)
    (tmp_path / "real").mkdir()
    for i, image in enumerate(real):
        Image.fromarray(((image.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)).save(
            tmp_path / "real" / f"{i:02d}.png"
        )
    train_encoder(
        G,
        tmp_path / "enc",
        steps=40,
        batch_size=8,
        lr=2e-3,
        width=8,
        latent_weight=0.0,
        real_data=str(tmp_path / "real"),
        progress=False,
    )
    history = json.loads((tmp_path / "enc" / "encoder-training.json").read_text())["history"]
    assert np.mean([h["pixel"] for h in history[-5:]]) < 0.7 * np.mean([h["pixel"] for h in history[:5]])
    with pytest.raises(TlganError, match="16, 16"):
        train_encoder(G, tmp_path / "bad", steps=1, real_data=torch.zeros(4, 3, 8, 8), progress=False)


def test_encoder_for_another_generator_is_refused(G, tmp_path):
    train_encoder(G, tmp_path, steps=2, batch_size=4, width=4, progress=False)
    other = tiny_generator(z_dim=8)
    with pytest.raises(TlganError, match="size 16"):
        load_encoder(tmp_path, generator=other)
    assert load_encoder(tmp_path / "nothing-here") is None
    (tmp_path / "encoder.safetensors").write_bytes(b"garbage")
    with pytest.raises(TlganError, match="safetensors"):
        load_encoder(tmp_path)


# ----------------------------------------------------------------------------------------
# Reading images
# ----------------------------------------------------------------------------------------


def png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def test_load_image_converts_crops_and_resizes(tmp_path, caplog):
    from tlgan.imaging import load_image, read_image

    # A wide RGBA image: an opaque colour in the centre square, transparent bands at the sides.
    arr = np.zeros((40, 80, 4), dtype=np.uint8)
    arr[:, 20:60] = (255, 0, 51, 255)
    path = tmp_path / "wide.png"
    Image.fromarray(arr, "RGBA").save(path)
    with caplog.at_level(logging.WARNING):
        image = load_image(path, 16)
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    # The centre crop keeps only the opaque square: exactly (255, 0, 51) -> (1, -1, -0.6).
    assert torch.allclose(image, torch.tensor([1.0, -1.0, -0.6])[:, None, None], atol=1e-5)
    assert "cropped 80x40" in caplog.text and "resized 40x40 to 16x16" in caplog.text

    # Transparent pixels become white; bytes work like files; no warning when nothing changed.
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    image, notes = read_image(png_bytes(clear), 16)
    assert torch.allclose(image, torch.ones(3, 16, 16)) and notes == []

    # 16-bit greys are rescaled, not clipped: 65535 is white, 0 is black.
    grey = np.zeros((20, 20), dtype=np.uint16)
    grey[:, 10:] = 65535
    image, _ = read_image(png_bytes(Image.fromarray(grey)), 20)
    assert image[:, :, :10].max() == -1.0 and image[:, :, 10:].min() == 1.0

    # A palette GIF and a greyscale JPEG come back as RGB.
    gif = io.BytesIO()
    Image.new("P", (20, 20), 3).save(gif, format="GIF")
    assert read_image(gif.getvalue(), 16)[0].shape == (3, 16, 16)
    jpg = io.BytesIO()
    Image.new("L", (30, 30), 128).save(jpg, format="JPEG")
    assert read_image(jpg.getvalue(), 16)[0].std() < 0.05


def test_load_image_applies_exif_rotation():
    from tlgan.imaging import read_image

    arr = np.zeros((20, 20, 3), dtype=np.uint8)
    arr[:, :10] = 255  # left half white, right half black
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # orientation 6: "rotate 90 degrees clockwise to display"
    image, notes = read_image(png_bytes(img, exif=exif), 20)
    assert notes == []
    # Turned clockwise, the left half ends up on top: top rows white, bottom rows black.
    assert image[:, :10].min() == 1.0 and image[:, 10:].max() == -1.0


def test_bad_images_are_refused_with_the_file_named(tmp_path, monkeypatch):
    from tlgan.imaging import read_image

    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    with pytest.raises(TlganError, match="notes.png: not an image"):
        read_image(text, 16)
    good = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(TlganError, match="cut.png: .*(damaged|truncated)"):
        read_image(cut, 16)
    with pytest.raises(TlganError, match="file not found"):
        read_image(tmp_path / "missing.png", 16)
    with pytest.raises(TlganError, match="empty"):
        read_image(b"", 16, name="upload.png")
    with pytest.raises(TlganError, match="too small"):
        read_image(png_bytes(Image.new("RGB", (8, 30))), 16)
    # Too many pixels: refused from the header, before anything is decoded ...
    with pytest.raises(TlganError, match="million pixels"):
        read_image(png_bytes(Image.new("RGB", (300, 300))), 16, name="big.png", max_pixels=50_000)
    # ... and Pillow's own decompression-bomb check becomes a TlganError too (its warning included).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    for side in (120, 200):  # 1.44x the limit warns, 4x raises inside Pillow
        with pytest.raises(TlganError, match="decompression bomb"):
            read_image(png_bytes(Image.new("RGB", (side, side))), 16, name="bomb.png", max_pixels=10**9)


# ----------------------------------------------------------------------------------------
# One upload (the studio's entry point)
# ----------------------------------------------------------------------------------------


def test_invert_image_from_bytes(G):
    _, x = planted(G, n=1)
    pixels = ((x[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    wide = np.pad(pixels, ((0, 0), (4, 4), (0, 0)))  # an "upload" with black side bands to crop
    latent, recon, info = invert_image(G, None, png_bytes(Image.fromarray(wide)), steps=300)
    assert latent.shape == (G.z_dim,) and recon.shape == (3, 16, 16)
    assert info["psnr_db"] > 30.0 and info["encoder_psnr_db"] is None
    assert info["notes"] == ["cropped 24x16 to the centre 16x16 square"]
    with pytest.raises(TlganError, match="not an image"):
        invert_image(G, None, b"%PDF-1.4 not a picture")


def test_invert_image_finds_the_shipped_encoder(tmp_path, monkeypatch):
    import tlgan.models.zoo as zoo

    G = tiny_generator()  # a fresh object: nothing cached for it yet
    train_encoder(G, tmp_path / "weights" / "some-gan", steps=3, batch_size=4, width=4, progress=False)
    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path / "weights")
    upload = png_bytes(Image.new("RGB", (16, 16), (90, 30, 200)))
    # The generator's name ("tiny") is not registered: the encoder is found by its weights fingerprint.
    _, _, info = invert_image(G, None, upload, steps=0)
    assert info["encoder_psnr_db"] is not None and info["psnr_db"] == info["encoder_psnr_db"]
    other = tiny_generator(seed=1)  # same shapes, other weights: no encoder
    assert invert_image(other, None, upload, steps=0)[2]["encoder_psnr_db"] is None


# ----------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------


@pytest.fixture()
def factory_file(tmp_path):
    path = tmp_path / "tinygen.py"
    path.write_text(textwrap.dedent(TINY_FACTORY))
    return f"{path}:make"


def test_cli_invert_reports_bad_files_and_inverts_the_others(G, tmp_path, factory_file):
    from tlgan.cli import cli
    from tlgan.editing.latent_file import load_latent

    z, x = planted(G, n=2)
    files = []
    for i in range(2):
        pixels = ((x[i].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        files.append(tmp_path / f"face{i}.png")
        Image.fromarray(pixels).save(files[-1])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out"
    args = [
        "invert",
        str(files[0]),
        str(broken),
        str(files[1]),
        str(tmp_path / "gone.png"),
        "--out",
        str(out),
        "--generator",
        factory_file,
        "--classifier",
        "none",
        "--steps",
        "200",
        "--json",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [f["file"] for f in report["failed"]] == [str(broken), str(tmp_path / "gone.png")]
    assert "broken.jpg" in result.stderr
    assert [r["file"] for r in report["images"]] == [str(files[0]), str(files[1])]
    for i, r in enumerate(report["images"]):
        latent, meta = load_latent(out / f"face{i}.safetensors")
        assert meta["generator"] == factory_file and meta["space"] == "z"
        assert r["psnr_db"] > 30.0  # 8-bit PNG rounding limits this to ~50 dB
        assert (out / f"face{i}.png").is_file()
        with torch.no_grad():
            again = G.synthesize(latent)
        assert float(psnr_db(again, x[i : i + 1])) > 30.0
    assert report["seconds_per_image"] > 0


def test_cli_train_encoder_then_invert_with_it(tmp_path, factory_file):
    from tlgan.cli import cli

    runner = CliRunner()
    enc = tmp_path / "enc"
    base = [
        "train",
        "encoder",
        "--generator",
        factory_file,
        "--out",
        str(enc),
        "--batch-size",
        "8",
        "--width",
        "4",
        "--checkpoint-every",
        "3",
        "--json",
    ]
    first = runner.invoke(cli, base + ["--steps", "3"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(cli, base + ["--steps", "6", "--resume"])
    assert second.exit_code == 0, second.output
    summary = json.loads(second.stdout)
    assert summary["resumed_from"] == 3 and summary["steps"] == 6
    img = tmp_path / "face.png"
    Image.new("RGB", (16, 16), (200, 40, 40)).save(img)
    result = runner.invoke(
        cli,
        [
            "invert",
            str(img),
            "--out",
            str(tmp_path / "o"),
            "--generator",
            factory_file,
            "--classifier",
            "none",
            "--encoder",
            str(enc),
            "--no-optimize",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"][0]["encoder_psnr_db"] is not None


def test_evaluate_inversion_on_the_renderer():
    pytest.importorskip("tlgan.toyfaces.generator")
    from tlgan.inversion.evaluate import evaluate_inversion
    from tlgan.models import load_generator
    from tlgan.toyfaces import world

    renderer = load_generator("toyfaces-render")
    # A tiny 16 px classifier of the 17 attributes: its labels are arbitrary, so only bounds are checked.
    F = AttributeClassifierNet(list(world.ATTRIBUTES), resolution=16, width=4).eval()
    res = evaluate_inversion(renderer, F, renderer=renderer, n=2, steps=4, candidates=4)
    none = evaluate_inversion(renderer, F, renderer=renderer, n=2, optimize=False, candidates=4)
    for kind in ("generated", "rendered"):
        assert res[kind]["psnr_db_mean"] >= none[kind]["psnr_db_mean"] - 1e-3
    assert 0.0 <= res["rendered"]["attribute_agreement"] <= 1.0
    assert res["generated"]["encoder_psnr_db_mean"] is None


def test_frozen_restores_every_submodules_own_mode():
    """A wrapper left in training mode around a network in eval mode comes back exactly so."""
    from tlgan.inversion.encoder import frozen

    inner = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)).eval()
    wrapper = torch.nn.Sequential(inner, torch.nn.Dropout(0.5))  # wrapper and dropout in training mode
    inner[0].weight.requires_grad_(False)
    with frozen(wrapper):
        assert not any(m.training for m in wrapper.modules())
        assert not any(p.requires_grad for p in wrapper.parameters())
    assert wrapper.training and wrapper[1].training
    assert not inner.training and not inner[0].training and not inner[1].training
    assert not inner[0].weight.requires_grad and inner[0].bias.requires_grad
