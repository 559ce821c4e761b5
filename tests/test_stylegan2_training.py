"""StyleGAN2 training on tiny settings: the discriminator, R1, style mixing, w_avg tracking, both
`--arch stylegan2` routes resuming bit for bit, and the e4e-style wp encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from test_data import make_celeba
from test_training import SmoothTeacher, distill_interrupted_at
from tlgan.errors import TlganError
from tlgan.models import ModuleGenerator
from tlgan.models.networks import load_pretrained
from tlgan.models.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator, minibatch_std
from tlgan.train.checkpoint import restore_checkpoint
from tlgan.train.distill import distill_generator
from tlgan.train.generator import autocast_dtype, discriminator_loss, r1_penalty, train_generator
from tlgan.train.stylegan2 import path_length_penalty, training_wp

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_ARCH = dict(channel_base=64, channel_max=8, w_dim=8, mapping_layers=2)
TINY_ADV = dict(
    z_dim=8,
    resolution=16,
    batch_size=4,
    arch="stylegan2",
    arch_kwargs=TINY_ARCH,
    r1_every=2,
    pl_weight=2.0,
    pl_every=2,
    sample_every=100,
    progress=False,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root, _ = make_celeba(tmp_path_factory.mktemp("celeba") / "d", n=40, size=16)
    return root


def _tiny_generator(seed: int = 0) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    return StyleGAN2Generator(z_dim=8, img_resolution=16, **TINY_ARCH)


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ------------------------------------------------------------------------------------------
# The discriminator and the regularisers
# ------------------------------------------------------------------------------------------


def test_discriminator_shapes_and_errors():
    torch.manual_seed(0)
    D = StyleGAN2Discriminator(img_resolution=32, channel_base=128, channel_max=16)
    assert [r for r in D.resolutions] == [32, 16, 8]
    out = D(torch.randn(6, 3, 32, 32))
    assert out.shape == (6,) and torch.isfinite(out).all()
    assert D(torch.randn(5, 3, 32, 32)).shape == (5,)  # a batch that groups of 4 do not divide
    with pytest.raises(TlganError, match=r"takes images \(N, 3, 32, 32\)"):
        D(torch.randn(2, 3, 16, 16))
    with pytest.raises(TlganError, match="4 \\* 2\\^k"):
        StyleGAN2Discriminator(img_resolution=48)


def test_minibatch_std_against_closed_form():
    x = torch.randn(8, 4, 2, 2)
    out = minibatch_std(x, group_size=4)
    assert out.shape == (8, 5, 2, 2) and torch.equal(out[:, :4], x)
    # Group of image i: i, i + 2, i + 4, i + 6 (N / G = 2 groups).
    for i in range(2):
        group = x[i::2]
        expected = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(out[i::2, 4], expected.expand(4, 2, 2), atol=1e-6)
    same = minibatch_std(torch.ones(4, 2, 3, 3))
    assert same[:, 2].abs().max() < 1e-3  # no variety, no signal


def test_discriminator_learns_to_separate_two_image_sets():
    """Bright-left vs bright-right images, both with noise: a few dozen Adam steps separate them."""
    torch.manual_seed(0)
    D = StyleGAN2Discriminator(img_resolution=16, channel_base=64, channel_max=16)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99))
    g = torch.Generator().manual_seed(1)

    def images(n, left):
        x = torch.randn(n, 3, 16, 16, generator=g) * 0.3
        x[..., :8] += 0.5 if left else -0.5
        return x

    def accuracy():
        with torch.no_grad():
            hits = (D(images(64, True)) > 0).float().mean() + (D(images(64, False)) < 0).float().mean()
        return 0.5 * float(hits)

    before = accuracy()
    for _ in range(40):
        loss = discriminator_loss(D(images(16, True)), D(images(16, False)), "nonsaturating")
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert accuracy() >= 0.95 and before < 0.9, before


def test_r1_penalty_closed_form_and_gradient_flow():
    # For D(x) = <a, x> the gradient is a everywhere, so R1 = |a|^2.
    lin = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 1, bias=False))
    x = torch.randn(5, 3, 4, 4)
    r1 = r1_penalty(lambda images: lin(images).squeeze(1), x)
    assert torch.allclose(r1, lin[1].weight.pow(2).sum(), rtol=1e-5)
    # On the StyleGAN2 discriminator: positive, and its gradient reaches every weight layer.
    torch.manual_seed(0)
    D = StyleGAN2Discriminator(img_resolution=16, channel_base=64, channel_max=8)
    r1 = r1_penalty(D, torch.randn(4, 3, 16, 16))
    assert float(r1.detach()) > 0
    r1.backward()
    grads = {name: p.grad for name, p in D.named_parameters() if name.endswith("weight")}
    # The last layer's weights enter R1 too (the gradient is linear in them).
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values()), [
        n for n, g in grads.items() if g is None or g.abs().sum() == 0
    ]


def test_w_avg_tracking_closed_form():
    G = _tiny_generator()
    w = torch.randn(16, 8)
    for _ in range(3):
        G.mapping.track_w_avg(w, beta=0.9)
    assert torch.allclose(G.mapping.w_avg, (1 - 0.9**3) * w.mean(0), atol=1e-6)


def test_style_mixing_takes_a_second_w_from_one_layer_on():
    G = _tiny_generator()
    z = torch.randn(64, 8)
    with torch.no_grad():
        w = G.mapping(z)
        plain = training_wp(G, z, track=False)
        mixed = training_wp(G, z, track=False, mixing_prob=1.0, rng=torch.Generator().manual_seed(0))
        again = training_wp(G, z, track=False, mixing_prob=1.0, rng=torch.Generator().manual_seed(0))
    assert torch.equal(plain, w[:, None].expand(-1, G.num_ws, -1))
    assert torch.equal(mixed, again)  # the draw depends on rng alone
    for i in range(64):
        same = (mixed[i] == w[i]).all(dim=1)  # (num_ws,) layers that kept the first w
        cut = int(same.long().sum())
        assert 1 <= cut < G.num_ws and same[:cut].all() and not same[cut:].any()
    with pytest.raises(ValueError, match="rng"):
        training_wp(G, z, mixing_prob=0.5)


def test_path_length_penalty_updates_its_running_mean():
    G = _tiny_generator()
    wp = training_wp(G, torch.randn(4, 8), track=False).detach().requires_grad_(True)
    pl_mean = torch.zeros([])
    noise = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    penalty, lengths = path_length_penalty(G, wp, pl_mean, noise, decay=0.5)
    assert lengths.shape == (4,) and (lengths > 0).all()
    assert torch.allclose(pl_mean, 0.5 * lengths.mean().detach())
    assert torch.allclose(penalty, (lengths - pl_mean).square().mean())
    penalty.backward()
    assert G.synthesis.b16.conv1.weight.grad.abs().sum() > 0


def test_mixed_precision_is_for_cuda_only():
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("fp32", torch.device("cpu")) is None
    with pytest.raises(TlganError, match="for CUDA devices"):
        autocast_dtype("bf16", torch.device("cpu"))
    with pytest.raises(TlganError, match="precision must be one of"):
        autocast_dtype("fp8", torch.device("cpu"))


# ------------------------------------------------------------------------------------------
# The two training routes: resumed runs equal straight ones, bit for bit
# ------------------------------------------------------------------------------------------


def test_adversarial_stylegan2_resumes_bit_for_bit(data_dir, tmp_path):
    straight = train_generator(data_dir, tmp_path / "straight", steps=4, **TINY_ADV)
    train_generator(data_dir, tmp_path / "two", steps=2, **TINY_ADV)
    train_generator(data_dir, tmp_path / "two", steps=4, resume=True, **TINY_ADV)
    a, b = load_pretrained(tmp_path / "straight"), load_pretrained(tmp_path / "two")
    assert isinstance(a, StyleGAN2Generator) and a.noise_mode == "const"
    _assert_identical(a.state_dict(), b.state_dict())
    nets = {}
    for name in ("straight", "two"):
        G, G_ema = _tiny_generator(), _tiny_generator()
        D = StyleGAN2Discriminator(img_resolution=16, channel_base=64, channel_max=8)
        manifest = restore_checkpoint(
            tmp_path / name, modules={"G": G, "D": D, "G_ema": G_ema}, optimizers={}, restore_rng=False
        )
        nets[name] = (G.state_dict(), D.state_dict(), manifest["info"]["pl_mean"])
    _assert_identical(nets["straight"][0], nets["two"][0])
    _assert_identical(nets["straight"][1], nets["two"][1])
    assert nets["straight"][2] == nets["two"][2] > 0
    # Training moved the weights and tracked w_avg; the grid was drawn.
    init = _tiny_generator()
    assert not torch.equal(a.synthesis.b16.torgb.weight, init.synthesis.b16.torgb.weight)
    assert a.mapping.w_avg.abs().sum() > 0
    assert Path(straight["samples"][-1]).is_file()
    config = json.loads((tmp_path / "straight" / "model.json").read_text())
    assert config["training"]["method"] == "adversarial" and config["training"]["precision"] == "float32"
    assert config["training"]["r1_gamma"] == pytest.approx(0.0002 * 16**2 / 4)
    with pytest.raises(TlganError, match="other settings"):
        train_generator(data_dir, tmp_path / "two", steps=6, resume=True, **{**TINY_ADV, "mixing_prob": 0.5})


def test_stylegan2_distillation_resumes_bit_for_bit_and_tracks_w_avg(tmp_path):
    teacher = ModuleGenerator(SmoothTeacher(), z_dim=8, name="teacher")
    kwargs = dict(
        batch_size=4,
        lr=3e-3,
        ema_decay=0.5,
        progress=False,
        sample_every=1000,
        arch="stylegan2",
        arch_kwargs=TINY_ARCH,
        edge_weight=0.5,
    )
    distill_interrupted_at(3, teacher, tmp_path / "c", steps=5, checkpoint_every=2, **kwargs)
    result = distill_generator(teacher, tmp_path / "c", steps=5, checkpoint_every=2, resume=True, **kwargs)
    distill_generator(teacher, tmp_path / "d", steps=5, checkpoint_every=2, **kwargs)
    a, c = load_pretrained(tmp_path / "d"), load_pretrained(tmp_path / "c")
    assert isinstance(a, StyleGAN2Generator)
    _assert_identical(a.state_dict(), c.state_dict())
    assert result["saved"] in ("G", "G_ema")
    # w_avg followed the students' w: with the mapping frozen it would equal the closed form.
    assert a.mapping.w_avg.abs().sum() > 0
    with torch.no_grad():
        w = a.sample_latents(512, seed=3, space="w")
    init = StyleGAN2Generator(z_dim=8, img_resolution=16, **TINY_ARCH).mapping.w_avg
    assert (a.mapping.w_avg - w.mean(0)).norm() < (init - w.mean(0)).norm()


# ------------------------------------------------------------------------------------------
# The wp encoder
# ------------------------------------------------------------------------------------------


def test_wp_encoder_shapes_offsets_and_files(tmp_path):
    from tlgan.inversion.encoder import WPEncoder, load_encoder
    from tlgan.train.encoder import train_encoder

    G = _tiny_generator().eval()
    G.mapping.w_avg.copy_(G.sample_latents(256, seed=5, space="w").mean(0))
    enc = WPEncoder(w_dim=8, num_ws=G.num_ws, resolution=16, width=4)
    wp = enc(torch.randn(3, 3, 16, 16))
    assert wp.shape == (3, G.num_ws, 8)
    with torch.no_grad():
        enc.head_offsets.weight.zero_()
        enc.head_offsets.bias.zero_()
        one_w = enc(torch.randn(3, 3, 32, 32))  # resized; zero offsets: one w for every layer
    assert torch.equal(one_w, one_w[:, :1].expand_as(one_w))

    common = dict(steps=12, batch_size=8, width=4, space="wp", progress=False, lr=3e-3)
    loose = train_encoder(G, tmp_path / "loose", offset_weight=0.0, **common)
    tight = train_encoder(G, tmp_path / "tight", offset_weight=100.0, **common)
    assert tight["final"]["offsets"] < 0.2 * loose["final"]["offsets"], (tight["final"], loose["final"])
    encoder = load_encoder(tmp_path / "tight", generator=G)
    assert isinstance(encoder, WPEncoder) and encoder.space == "wp" and encoder.info["space"] == "wp"
    assert torch.allclose(encoder.w_avg, G.mapping.w_avg)
    with torch.no_grad():
        images = G.synthesize(G.sample_latents(4, seed=1))
        w, offsets = encoder.parts(images)
    assert torch.allclose(encoder(images), encoder.compose(w, offsets))
    assert tight["eval"]["psnr_db_mean"] > 0
    # A generator without wp, or with other layers, is refused by name.
    other = StyleGAN2Generator(
        z_dim=8, img_resolution=32, channel_base=64, channel_max=8, w_dim=8, mapping_layers=2
    )
    with pytest.raises(TlganError, match="makes wp latents of shape 6 x 8"):
        load_encoder(tmp_path / "tight", generator=other)
    flat = ModuleGenerator(SmoothTeacher(), z_dim=8, name="flat")
    with pytest.raises(TlganError, match="has no 'wp' space"):
        load_encoder(tmp_path / "tight", generator=flat)
    with pytest.raises(TlganError, match="has no latent space 'wp'"):
        train_encoder(flat, tmp_path / "x", **common)


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def test_cli_stylegan2_routes(data_dir, tmp_path):
    from tlgan.cli import cli

    runner = CliRunner()
    sizes = ["--channel-base", "64", "--channel-max", "8", "--w-dim", "8", "--mapping-layers", "2"]
    res = runner.invoke(
        cli,
        [
            "train",
            "generator",
            "--arch",
            "stylegan2",
            *sizes,
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "g"),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--z-dim",
            "8",
            "--resolution",
            "16",
            "--r1-every",
            "1",
            "--sample-every",
            "1",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    g = load_pretrained(tmp_path / "g")
    assert isinstance(g, StyleGAN2Generator) and g.name == "stylegan2" and g.w_dim == 8
    assert (tmp_path / "g" / "samples" / "step-000002.png").is_file()

    res = runner.invoke(
        cli,
        [
            "train",
            "encoder",
            "--generator",
            str(tmp_path / "g"),
            "--out",
            str(tmp_path / "e"),
            "--space",
            "wp",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--width",
            "4",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e" / "encoder.json").read_text())["space"] == "wp"

    teacher = tmp_path / "teacher.py"
    teacher.write_text(
        "import torch\nfrom tlgan.models import ModuleGenerator\n\n\ndef make():\n"
        "    net = torch.nn.Sequential(torch.nn.Linear(8, 3 * 16 * 16), torch.nn.Tanh(),\n"
        "                              torch.nn.Unflatten(1, (3, 16, 16)))\n"
        "    return ModuleGenerator(net, z_dim=8, name='teacher')\n"
    )
    res = runner.invoke(
        cli,
        [
            "train",
            "distill",
            "--arch",
            "stylegan2",
            *sizes,
            "--teacher",
            f"{teacher}:make",
            "--out",
            str(tmp_path / "d"),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--edge-weight",
            "0.5",
            "--name",
            "cli-distilled",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    d = load_pretrained(tmp_path / "d")
    assert isinstance(d, StyleGAN2Generator) and d.name == "cli-distilled"
    training = json.loads((tmp_path / "d" / "model.json").read_text())["training"]
    assert training["arch_kwargs"] == {"channel_base": 64, "channel_max": 8, "w_dim": 8, "mapping_layers": 2}
    assert training["edge_weight"] == 0.5

    res = runner.invoke(
        cli,
        [
            "train",
            "generator",
            "--channel-base",
            "64",
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "x"),
            "--steps",
            "1",
        ],
    )
    assert isinstance(res.exception, TlganError) and "--channel-base apply to --arch stylegan2" in str(
        res.exception
    )


@pytest.mark.slow
def test_gpu_training_script_runs_end_to_end_on_cpu(tmp_path):
    """benchmarks/train_toyfaces_stylegan.sh with SMOKE=1: both routes, weights, grids and eval JSON."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "WORK": str(tmp_path / "work"),
        "SMOKE": "1",
        "ROUTE": "both",
        "PYTHON": sys.executable,
        "OMP_NUM_THREADS": "1",
    }
    subprocess.run(
        ["bash", str(root / "benchmarks" / "train_toyfaces_stylegan.sh")],
        env=env,
        check=True,
        capture_output=True,
        timeout=3000,
    )
    out = tmp_path / "out"
    for route in ("distill", "adversarial"):
        label = f"toyfaces-stylegan-{route}"
        model = load_pretrained(out / label)
        assert isinstance(model, StyleGAN2Generator) and model.name == "toyfaces-stylegan"
        assert json.loads((out / label / "encoder.json").read_text())["space"] == "wp"
        assert (out / f"samples-{label}.png").is_file()
        assert "generator" in json.loads((out / f"eval-{label}.json").read_text())
    assert "all done" in (out / "timings.txt").read_text()


@pytest.mark.gpu
def test_stylegan2_routes_on_cuda_with_mixed_precision(data_dir, tmp_path):
    for precision in ("auto", "fp16", "fp32"):
        result = train_generator(
            data_dir, tmp_path / precision, steps=3, device="cuda", precision=precision, **TINY_ADV
        )
        assert result["d_loss"] == result["d_loss"] and result["g_loss"] == result["g_loss"]  # not NaN
        config = json.loads((tmp_path / precision / "model.json").read_text())
        expected = {
            "auto": "bfloat16" if torch.cuda.is_bf16_supported() else "float32",
            "fp16": "float16",
            "fp32": "float32",
        }[precision]
        assert config["training"]["precision"] == expected
        with torch.no_grad():
            images = load_pretrained(tmp_path / precision).synthesize(torch.randn(4, 8))
        assert torch.isfinite(images).all()
    teacher = ModuleGenerator(SmoothTeacher(), z_dim=8, name="teacher")
    distill_generator(
        teacher,
        tmp_path / "d",
        steps=3,
        batch_size=4,
        device="cuda",
        progress=False,
        arch="stylegan2",
        arch_kwargs=TINY_ARCH,
    )
    assert isinstance(load_pretrained(tmp_path / "d"), StyleGAN2Generator)
