"""Networks, saving/loading, checkpoints and the two training loops, on tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from distill_fixtures import SmoothTeacher, distill_interrupted_at
from test_data import make_celeba
from tlgan.data import CelebAFolder
from tlgan.errors import TlganError
from tlgan.imaging import make_grid
from tlgan.models.base import Classifier, Generator
from tlgan.models.networks import (
    AttributeClassifierNet,
    DCGANDiscriminator,
    DCGANGenerator,
    count_macs,
    load_pretrained,
    save_pretrained,
)
from tlgan.train import (
    evaluate_classifier,
    has_checkpoint,
    resolve_device,
    restore_checkpoint,
    save_checkpoint,
    train_classifier,
    train_generator,
)

TINY_G = dict(width=8, z_dim=16, resolution=16, batch_size=16)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root, _ = make_celeba(tmp_path_factory.mktemp("celeba") / "d", n=100, size=16)
    return root


def _state(module: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6, rtol=0), k


# ------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------


def test_count_macs_matches_closed_form_and_budget():
    # z 16 -> 4x4x4 (16*64 MACs), then a transposed conv 4 -> 3 channels, kernel 4x4, that
    # spreads each of the 4*4*4 input values over 3 * 16 outputs.
    g = DCGANGenerator(z_dim=16, resolution=8, width=4)
    assert count_macs(g, torch.zeros(1, 16)) == 16 * 64 + 64 * 3 * 16
    # Conv 3->1, 3x3, on a 5x5 output: 25 * 27 MACs.
    assert count_macs(torch.nn.Conv2d(3, 1, 3, padding=1), torch.zeros(1, 3, 5, 5)) == 25 * 27
    # The bundled sizes stay cheap enough for 2 CPU cores.
    assert count_macs(DCGANGenerator(width=32), torch.zeros(1, 512)) < 0.1e9
    assert count_macs(DCGANDiscriminator(width=32), torch.zeros(1, 3, 64, 64)) < 0.1e9
    assert count_macs(AttributeClassifierNet(["a"], width=32), torch.zeros(1, 3, 64, 64)) < 0.12e9


def test_generator_contract():
    torch.manual_seed(0)
    g = DCGANGenerator(z_dim=16, resolution=16, width=8)
    assert isinstance(g, Generator) and g.img_resolution == 16 and g.z_dim == 16
    g.train()
    g.synthesize(torch.randn(32, 16))  # give BatchNorm some running statistics
    g.eval()
    z = torch.randn(5, 16) * 3
    with torch.no_grad():
        out = g.synthesize(z)
        alone = torch.cat([g.synthesize(z[i]) for i in range(5)])
    assert out.shape == (5, 3, 16, 16) and out.abs().max() <= 1.0
    assert torch.allclose(out, alone, atol=1e-5)  # eval mode: an image depends on its latent only
    with pytest.raises(TlganError, match="power of two"):
        DCGANGenerator(resolution=48)
    d = DCGANDiscriminator(resolution=16, width=8)
    assert d(out).shape == (5,)


def test_classifier_features_embedding_and_resize():
    torch.manual_seed(0)
    c = AttributeClassifierNet(["A", "B", "C"], resolution=16, width=4).eval()
    assert isinstance(c, Classifier) and c.attributes == ("A", "B", "C")
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        feats = c.features(x)
        emb = c.embedding(x)
        logits = c.logits(x)
    assert [tuple(f.shape[1:]) for f in feats] == [(4, 8, 8), (8, 4, 4)]
    assert torch.allclose(emb, feats[-1].mean(dim=(2, 3)))
    assert torch.allclose(logits, c.head(emb), atol=1e-6)
    big = torch.nn.functional.interpolate(x, size=(32, 32), mode="nearest")
    with torch.no_grad():
        down = torch.nn.functional.interpolate(big, size=(16, 16), mode="bilinear", antialias=True)
        assert torch.allclose(c.logits(big), c.logits(down), atol=1e-6)
        assert torch.allclose(c.embedding(big), c.embedding(down), atol=1e-6)


def test_save_load_round_trip_and_errors(tmp_path):
    torch.manual_seed(1)
    g = DCGANGenerator(z_dim=16, resolution=16, width=8).eval()
    g.name = "tiny-gan"
    save_pretrained(g, tmp_path / "g", extra={"training": {"steps": 3}})
    config = json.loads((tmp_path / "g" / "model.json").read_text())
    assert config["architecture"] == "DCGANGenerator"
    assert config["kwargs"] == {"z_dim": 16, "resolution": 16, "width": 8}
    assert config["name"] == "tiny-gan" and config["training"] == {"steps": 3}
    loaded = load_pretrained(tmp_path / "g")
    assert isinstance(loaded, DCGANGenerator) and loaded.name == "tiny-gan" and not loaded.training
    z = torch.randn(3, 16)
    with torch.no_grad():
        assert torch.equal(loaded.synthesize(z), g.synthesize(z))

    c = AttributeClassifierNet(["Smiling", "Male"], resolution=16, width=4).eval()
    save_pretrained(c, tmp_path / "c")
    c2 = load_pretrained(tmp_path / "c")
    assert c2.attributes == ("Smiling", "Male")
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(c2.logits(x), c.logits(x))

    with pytest.raises(TlganError, match="may not set"):
        save_pretrained(g, tmp_path / "x", extra={"name": "other"})

    # Truncated weights: a TlganError naming the file, not a stack trace from deep inside.
    weights = tmp_path / "g" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(TlganError, match=r"model\.safetensors: not a readable safetensors file"):
        load_pretrained(tmp_path / "g")
    # Config and weights that do not belong together.
    config_c = json.loads((tmp_path / "c" / "model.json").read_text())
    config_c["kwargs"]["width"] = 8
    (tmp_path / "c" / "model.json").write_text(json.dumps(config_c))
    with pytest.raises(TlganError, match="has shape"):
        load_pretrained(tmp_path / "c")
    config_c["architecture"] = "AttributeClassifierNett"
    (tmp_path / "c" / "model.json").write_text(json.dumps(config_c))
    with pytest.raises(TlganError, match="did you mean 'AttributeClassifierNet'"):
        load_pretrained(tmp_path / "c")
    config_c["architecture"] = "AttributeClassifierNet"
    config_c["kwargs"]["depth"] = 3
    (tmp_path / "c" / "model.json").write_text(json.dumps(config_c))
    with pytest.raises(TlganError, match="do not fit AttributeClassifierNet"):
        load_pretrained(tmp_path / "c")


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------


def _adam_steps(model, opt, n, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        loss = model(torch.randn(8, 4, generator=g)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_checkpoint_round_trip_continues_identically(tmp_path):
    torch.manual_seed(0)

    def make():
        return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.Linear(6, 1))

    model = make()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.5, 0.9))
    _adam_steps(model, opt, 3, seed=1)
    save_checkpoint(tmp_path, step=3, modules={"net": model}, optimizers={"net": opt}, info={"note": "x"})
    assert has_checkpoint(tmp_path)
    manifest = json.loads((tmp_path / "checkpoint" / "manifest.json").read_text())
    assert manifest["step"] == 3 and manifest["info"] == {"note": "x"}

    other = make()
    opt2 = torch.optim.Adam(other.parameters(), lr=1.0)
    loaded = restore_checkpoint(tmp_path, modules={"net": other}, optimizers={"net": opt2})
    assert loaded["step"] == 3
    assert opt2.param_groups[0]["betas"] == (0.5, 0.9) and opt2.param_groups[0]["lr"] == 1e-2
    _adam_steps(model, opt, 2, seed=2)
    _adam_steps(other, opt2, 2, seed=2)
    _assert_same_state(_state(model), _state(other))

    with pytest.raises(TlganError, match="does not match this one"):
        wider = torch.nn.Sequential(torch.nn.Linear(4, 7), torch.nn.BatchNorm1d(7), torch.nn.Linear(7, 1))
        restore_checkpoint(tmp_path, modules={"net": wider}, optimizers={})
    with pytest.raises(TlganError, match="holds networks"):
        restore_checkpoint(tmp_path, modules={"G": make()}, optimizers={})
    state = tmp_path / "checkpoint" / "state.safetensors"
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(TlganError, match="truncated or corrupt"):
        restore_checkpoint(tmp_path, modules={"net": make()}, optimizers={})


# ------------------------------------------------------------------------------------------
# Classifier training
# ------------------------------------------------------------------------------------------

CLS = dict(batch_size=32, width=8, resolution=16, lr=3e-3, progress=False)


def test_classifier_learns_planted_attributes(data_dir, tmp_path):
    result = train_classifier(data_dir, tmp_path / "cls", steps=150, command="test", **CLS)
    assert result["test_balanced_accuracy"]["Square"] >= 0.9
    assert result["test_balanced_accuracy"]["Bright"] >= 0.9
    model = load_pretrained(tmp_path / "cls")
    assert model.attributes == ("Square", "Bright")
    config = json.loads((tmp_path / "cls" / "model.json").read_text())
    assert config["training"]["command"] == "test" and config["training"]["steps"] == 150
    assert (
        config["metrics"]["test"]["Square"]["balanced_accuracy"] == result["test_balanced_accuracy"]["Square"]
    )
    test = CelebAFolder(data_dir, "test", resolution=16, progress=False)
    again = evaluate_classifier(model, test.images, test.labels)
    assert again == result["test_metrics"]


def test_balanced_accuracy_closed_form():
    class Fixed(Classifier):
        attributes = ("A",)
        input_resolution = 8

        def _logits(self, images):
            return images[:, :1, 0, 0] * 10  # "present" iff the first pixel is bright

    labels = torch.tensor([[1.0]] * 4 + [[0.0]] * 6)
    # Predict present for 3 of the 4 positives and 2 of the 6 negatives.
    bright = torch.tensor([1, 1, 1, 0, 1, 1, 0, 0, 0, 0], dtype=torch.bool)
    images = torch.where(bright[:, None, None, None], 255, 0).to(torch.uint8).expand(10, 3, 8, 8).contiguous()
    m = evaluate_classifier(Fixed(), images, labels)["A"]
    assert m["true_positive_rate"] == pytest.approx(0.75) and m["true_negative_rate"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 4 / 6) / 2) and m["accuracy"] == pytest.approx(0.7)


class Crash(Exception):
    pass


def _crash_at(n):
    def hook(step, values):
        if step == n:
            raise Crash

    return hook


def test_classifier_resume_after_crash_equals_uninterrupted_run(data_dir, tmp_path):
    train_classifier(data_dir, tmp_path / "straight", steps=12, **CLS)
    with pytest.raises(Crash):
        train_classifier(
            data_dir, tmp_path / "crashed", steps=12, checkpoint_every=5, on_step=_crash_at(8), **CLS
        )
    assert json.loads((tmp_path / "crashed" / "checkpoint" / "manifest.json").read_text())["step"] == 5
    with pytest.raises(TlganError, match="pass --resume"):
        train_classifier(data_dir, tmp_path / "crashed", steps=12, **CLS)
    with pytest.raises(TlganError, match=r"other settings \(lr: checkpoint 0.003, now 0.001\)"):
        train_classifier(data_dir, tmp_path / "crashed", steps=12, resume=True, **{**CLS, "lr": 1e-3})
    resumed = train_classifier(data_dir, tmp_path / "crashed", steps=12, resume=True, **CLS)
    a, b = load_pretrained(tmp_path / "straight"), load_pretrained(tmp_path / "crashed")
    _assert_same_state(_state(a), _state(b))
    assert (
        resumed["test_balanced_accuracy"]
        == json.loads((tmp_path / "straight" / "metrics.json").read_text())["test_balanced_accuracy"]
    )


# ------------------------------------------------------------------------------------------
# Generator training
# ------------------------------------------------------------------------------------------


def test_generator_tiny_run_writes_samples_and_loadable_model(data_dir, tmp_path):
    result = train_generator(
        data_dir,
        tmp_path / "gan",
        steps=4,
        sample_every=2,
        name="tiny",
        progress=False,
        r1_gamma=1.0,
        r1_every=2,
        **TINY_G,
    )
    samples = [tmp_path / "gan" / "samples" / f"step-{k:06d}.png" for k in (2, 4)]
    assert result["samples"] == [str(p) for p in samples]
    for p in samples:
        with Image.open(p) as img:
            assert img.mode == "RGB" and img.width >= 8 * 16 and img.height >= 8 * 16
    assert np.asarray(Image.open(samples[0])).std() > 1  # not a blank grid
    g = load_pretrained(tmp_path / "gan")
    assert isinstance(g, DCGANGenerator) and g.name == "tiny" and g.z_dim == 16
    init = DCGANGenerator(z_dim=16, resolution=16, width=8)
    assert not torch.allclose(g.to_rgb.weight, init.to_rgb.weight)
    # The saved model is the (re-calibrated) weight average that drew the last grid.
    with torch.no_grad():
        images = g.synthesize(g.sample_latents(64, seed=0))
    assert torch.isfinite(images).all() and images.abs().max() <= 1
    expected = make_grid(images, nrow=8, padding=2).astype(int)
    assert np.abs(np.asarray(Image.open(samples[-1]), dtype=int) - expected).max() <= 1
    assert result["d_loss"] > 0 and result["g_loss"] > 0


def test_generator_resume_to_more_steps_equals_straight_run(data_dir, tmp_path):
    kw = dict(sample_every=100, progress=False, flip=True, **TINY_G)
    train_generator(data_dir, tmp_path / "straight", steps=6, **kw)
    train_generator(data_dir, tmp_path / "two", steps=3, **kw)
    train_generator(data_dir, tmp_path / "two", steps=6, resume=True, **kw)
    a, b = load_pretrained(tmp_path / "straight"), load_pretrained(tmp_path / "two")
    _assert_same_state(_state(a), _state(b))
    # The raw G and D in the checkpoints agree too.
    nets = {}
    for name in ("straight", "two"):
        G = DCGANGenerator(z_dim=16, resolution=16, width=8)
        D = DCGANDiscriminator(resolution=16, width=8)
        G_ema = DCGANGenerator(z_dim=16, resolution=16, width=8)
        restore_checkpoint(
            tmp_path / name, modules={"G": G, "D": D, "G_ema": G_ema}, optimizers={}, restore_rng=False
        )
        nets[name] = (_state(G), _state(D))
    _assert_same_state(nets["straight"][0], nets["two"][0])
    _assert_same_state(nets["straight"][1], nets["two"][1])


def test_device_errors():
    if not torch.cuda.is_available():
        with pytest.raises(TlganError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(TlganError, match="unknown device"):
        resolve_device("gpu0")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.gpu
def test_classifier_trains_on_cuda(data_dir, tmp_path):
    result = train_classifier(data_dir, tmp_path / "cls", steps=30, device="cuda", **CLS)
    assert result["test_mean_balanced_accuracy"] >= 0.8
    train_generator(data_dir, tmp_path / "gan", steps=2, device="cuda", progress=False, **TINY_G)
    assert load_pretrained(tmp_path / "gan").z_dim == 16


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def test_cli_train_commands(data_dir, tmp_path):
    from tlgan.cli.train import train

    runner = CliRunner()
    res = runner.invoke(
        train,
        [
            "classifier",
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "c"),
            "--steps",
            "3",
            "--batch-size",
            "16",
            "--width",
            "4",
            "--resolution",
            "16",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["steps"] == 3 and set(out["test_balanced_accuracy"]) == {"Square", "Bright"}
    assert (tmp_path / "c" / "model.safetensors").is_file()

    res = runner.invoke(
        train,
        [
            "generator",
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "g"),
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--width",
            "4",
            "--z-dim",
            "8",
            "--resolution",
            "16",
            "--sample-every",
            "1",
            "--name",
            "cli-gan",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "saved to" in res.output and (tmp_path / "g" / "samples" / "step-000002.png").is_file()
    assert load_pretrained(tmp_path / "g").name == "cli-gan"

    res = runner.invoke(
        train, ["classifier", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]
    )
    assert isinstance(res.exception, TlganError) and "data folder not found" in str(res.exception)


def test_distillation_fits_a_teacher_and_resumes_identically(tmp_path):
    """A student fitted to a fixed teacher gets closer to it; a resumed run equals a straight one."""
    from tlgan.models import ModuleGenerator
    from tlgan.models.networks import load_pretrained
    from tlgan.train.distill import distill_generator

    teacher = ModuleGenerator(SmoothTeacher(), z_dim=8, name="teacher")
    z = teacher.sample_latents(64, seed=9)
    kwargs = dict(batch_size=16, lr=3e-3, width=8, ema_decay=0.5, progress=False, sample_every=1000)
    untrained = distill_generator(teacher, tmp_path / "u", steps=1, **{**kwargs, "lr": 0.0})
    straight = distill_generator(teacher, tmp_path / "a", steps=300, **kwargs)
    student = load_pretrained(tmp_path / "a")
    with torch.no_grad():
        before = torch.nn.functional.l1_loss(
            load_pretrained(tmp_path / "u").synthesize(z), teacher.synthesize(z)
        )
        after = torch.nn.functional.l1_loss(student.synthesize(z), teacher.synthesize(z))
    assert after < 0.8 * before, (float(after), float(before))
    assert untrained["steps"] == 1
    assert straight["steps"] == 300

    distill_interrupted_at(45, teacher, tmp_path / "c", steps=60, checkpoint_every=30, **kwargs)
    # A checkpoint from before the settings arch, arch_kwargs and edge_weight were recorded
    # resumes with their old values, and only with those.
    from tlgan.io import load_tensors, save_tensors
    from tlgan.train.checkpoint import checkpoint_dir

    state = checkpoint_dir(tmp_path / "c") / "state.safetensors"
    tensors, manifest = load_tensors(state)
    for key in ("arch", "arch_kwargs", "edge_weight"):
        del manifest["info"]["settings"][key]
    save_tensors(state, tensors, manifest)
    with pytest.raises(TlganError, match="edge_weight: checkpoint 0.0, now 0.5"):
        distill_generator(
            teacher,
            tmp_path / "c",
            steps=60,
            checkpoint_every=30,
            resume=True,
            **{**kwargs, "edge_weight": 0.5},
        )
    distill_generator(teacher, tmp_path / "c", steps=60, checkpoint_every=30, resume=True, **kwargs)
    distill_generator(teacher, tmp_path / "d", steps=60, **kwargs)
    a = load_pretrained(tmp_path / "d").state_dict()
    c = load_pretrained(tmp_path / "c").state_dict()
    for key in a:
        assert torch.allclose(a[key].float(), c[key].float(), atol=1e-5), key
