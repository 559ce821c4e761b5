"""StyleGAN3 (T and R): the network, NVlabs pickles read without running code, spaces, edits and the input transform."""

from __future__ import annotations

import json
import os
import pickle
import sys
import types

import pytest
import torch

from tlgan.editing.edit import edit_latents
from tlgan.errors import TlganError
from tlgan.models import load_generator
from tlgan.models.formats import convert, read_checkpoint
from tlgan.models.formats.stylegan3_fixtures import (
    nvlabs_stylegan3_kwargs,
    tiny_stylegan3,
    write_nvlabs_stylegan3_pickle,
)
from tlgan.models.formats.unpickler import RefusedGlobal, restricted_load
from tlgan.models.stylegan3 import StyleGAN3Generator, input_transform

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = ("t", "r")


@pytest.fixture(scope="module")
def nets():
    return {cfg: tiny_stylegan3(cfg) for cfg in CONFIGS}


@pytest.fixture(scope="module")
def files(nets, tmp_path_factory):
    root = tmp_path_factory.mktemp("sg3")
    for cfg, G in nets.items():
        write_nvlabs_stylegan3_pickle(G, root / f"sg3{cfg}.pkl")
    return root


def _z(n=3, seed=3, dim=16):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------- network


@pytest.mark.parametrize("cfg", CONFIGS)
def test_vocabulary_layers_and_filters(nets, cfg):
    G = nets[cfg]
    assert (G.z_dim, G.w_dim, G.num_ws, G.img_resolution) == (16, 16, 8, 32)
    layers = G.synthesis.layers()
    assert len(layers) == G.num_ws - 1 and layers[-1].is_torgb
    assert layers[-1].up_filter is None and layers[-1].down_filter is None
    assert {layer.conv_kernel for layer in layers[:-1]} == ({3} if cfg == "t" else {1})
    for layer in layers[:-1]:
        assert torch.allclose(layer.up_filter.sum(), torch.tensor(1.0), atol=1e-6)
        f = layer.down_filter
        assert torch.allclose(f.sum(), torch.tensor(1.0), atol=1e-6)
        # R: radially symmetric 2-D down-filters except in the critically sampled layers
        # (the last num_critical = 2 before toRGB); T: separable 1-D filters everywhere.
        radial = cfg == "r" and layer not in layers[-3:-1]
        assert f.ndim == (2 if radial else 1)
        if radial:
            assert torch.equal(f, f.T) and torch.equal(f, torch.rot90(f, 1))
    images = G.synthesize(_z())
    assert images.shape == (3, 3, 32, 32) and images.abs().max() <= 1.0 and images.std() > 0.02
    with pytest.raises(TlganError, match=r"space 'wp' needs 8 x 16"):
        G.synthesize(torch.zeros(2, 16), "wp")
    with pytest.raises(TlganError, match="power of two"):
        StyleGAN3Generator(img_resolution=48)


def _filtered_lrelu_by_definition(x, fu, fd, b, up, down, pad, clamp):
    """Zero insertion, padding, one 2-D convolution with the outer product of the up-filter, bias,
    leaky ReLU, clamp, a 2-D convolution with the down-filter, then every down-th sample."""
    n, c, h, w = x.shape
    x = x + b[None, :, None, None]
    z = torch.zeros(n, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    z = torch.nn.functional.pad(z, pad)
    k2 = torch.outer(fu, fu) * up**2
    z = torch.nn.functional.conv2d(z, k2.flip(0, 1)[None, None].repeat(c, 1, 1, 1), groups=c)
    z = (torch.nn.functional.leaky_relu(z, 0.2) * 2**0.5).clamp(-clamp, clamp)
    kd = fd if fd.ndim == 2 else torch.outer(fd, fd)
    z = torch.nn.functional.conv2d(z, kd.flip(0, 1)[None, None].repeat(c, 1, 1, 1), groups=c)
    return z[:, :, ::down, ::down]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_the_filtered_lrelu_of_every_layer_follows_its_definition(nets, cfg):
    from tlgan.models.stylegan3 import filtered_lrelu

    g = torch.Generator().manual_seed(4)
    for layer in nets[cfg].synthesis.layers()[:-1]:
        size = layer.in_size + layer.conv_kernel - 1  # the convolution's output
        x = torch.randn(2, layer.out_channels, size, size, generator=g)
        args = (layer.up_filter, layer.down_filter, layer.bias.detach(), layer.up_factor, layer.down_factor)
        ours = filtered_lrelu(x, *args, layer.padding, clamp=0.8)
        want = _filtered_lrelu_by_definition(x, *args, layer.padding, 0.8)
        assert ours.shape == want.shape == (2, layer.out_channels, layer.out_size, layer.out_size)
        assert torch.allclose(ours, want, atol=1e-5), (layer.padding, (ours - want).abs().max())


@pytest.mark.parametrize("cfg", CONFIGS)
def test_z_to_w_to_image_equals_z_to_image_and_a_batch_does_not_change_a_row(nets, cfg):
    G = nets[cfg]
    z = _z()
    w = G.map_latents(z, "z", "w")
    wp = G.map_latents(w, "w", "wp")
    a = G.synthesize(z)
    assert torch.equal(a, G.synthesize(w, "w")) and torch.equal(a, G.synthesize(wp, "wp"))
    assert torch.equal(G.synthesize_raw(wp).clamp(-1, 1), a)
    # A row does not depend on its batch (the convolutions' rounding aside).
    assert torch.allclose(G.synthesize(z[1:2]), a[1:2], atol=1e-4)
    assert G.noise_maps() == {}
    with pytest.raises(TlganError, match="StyleGAN3 has no noise maps"):
        G.synthesize_raw(wp, noise={"L0.noise": torch.zeros(1)})
    with pytest.raises(TlganError, match="no noise"):
        G.configure(noise_mode="random")


def test_raw_synthesis_is_differentiable_in_wp(nets):
    G = nets["t"]
    wp = G.map_latents(_z(1), "z", "wp").detach().requires_grad_(True)
    G.synthesize_raw(wp).square().mean().backward()
    assert wp.grad is not None and wp.grad.abs().sum(-1).gt(0).all()  # every layer's w reaches the image


@pytest.mark.parametrize("cfg", CONFIGS)
def test_truncation_psi_0_gives_w_avg_and_a_cutoff_keeps_the_later_layers(nets, cfg):
    G = nets[cfg]
    z = _z()
    H = tiny_stylegan3(cfg).configure(truncation_psi=0.0)
    w_avg_image = G.synthesize(G.mapping.w_avg[None].repeat(3, 1), "w")
    assert torch.allclose(H.synthesize(z), w_avg_image, atol=1e-6)
    assert H.options == {"truncation_psi": 0.0}
    C = tiny_stylegan3(cfg).configure(truncation_psi=0.5, truncation_cutoff=3)
    wp, w = C.map_latents(z, "z", "wp"), G.map_latents(z, "z", "w")
    assert torch.equal(wp[:, 3:], w[:, None].expand(-1, 5, -1))
    assert torch.allclose(wp[:, :3], (G.w_avg + 0.5 * (w - G.w_avg))[:, None].expand(-1, 3, -1), atol=1e-6)
    with pytest.raises(TlganError, match="truncation_cutoff must be 1..8"):
        C.configure(truncation_cutoff=9)


def test_a_wp_edit_on_some_layers_leaves_the_others_w_unchanged(nets):
    from tlgan.axes import FeatureAxes

    G = nets["t"]
    axes = FeatureAxes(torch.nn.functional.normalize(torch.randn(2, 16), dim=1), ["A", "B"], space="w")
    wp = G.map_latents(_z(2), "z", "wp").detach()
    edited = edit_latents(wp, axes, {"A": 2.0}, space="wp", layers=range(2, 5))
    assert torch.equal(edited[:, :2], wp[:, :2]) and torch.equal(edited[:, 5:], wp[:, 5:])
    assert torch.allclose(edited[:, 2:5] - wp[:, 2:5], 2.0 * axes["A"].expand(2, 3, -1), atol=1e-6)
    assert not torch.equal(G.synthesize(edited, "wp"), G.synthesize(wp, "wp"))


def test_sefa_weights_are_the_style_affines_of_the_convolutions(nets):
    G = nets["r"]
    A = G.latent_weight("w")
    convs = G.synthesis.layers()[:-1]
    assert A.shape == (sum(c.in_channels for c in convs), 16)
    assert torch.equal(G.latent_weight("w", [2]), convs[1].affine.weight * convs[1].affine.weight_gain)
    with pytest.raises(TlganError, match=r"layer\(s\) \[0\].*input transform"):
        G.latent_weight("w", [0])
    from tlgan.axes.finders.sefa import SeFaFinder

    finder = SeFaFinder(n_components=3, layers=[1, 2], normalize=False).fit(generator=G, space="w")
    top = torch.linalg.svd(G.latent_weight("w", [1, 2]).double(), full_matrices=False).Vh[0]
    assert abs(float(torch.dot(torch.as_tensor(finder.axes_[0]).double(), top))) > 0.999


# ------------------------------------------------------------------------------ input transform


@pytest.mark.parametrize("cfg", CONFIGS)
def test_a_transform_of_0_degrees_and_no_move_is_the_identity(nets, cfg):
    z = _z()
    G = tiny_stylegan3(cfg)
    want = G.synthesize(z)
    assert torch.equal(input_transform(0.0, (0.0, 0.0)), torch.eye(3))
    G.configure(input_transform=input_transform(0.0, (0.0, 0.0)))
    assert torch.equal(G.synthesize(z), want) and "input_transform" not in G.options
    G.configure(input_transform=input_transform(10.0, (0.1, 0.0)))
    assert not torch.allclose(G.synthesize(z), want, atol=1e-3)
    assert torch.equal(torch.tensor(G.options["input_transform"]), input_transform(10.0, (0.1, 0.0)))
    G.configure(input_transform=torch.eye(3))
    assert torch.equal(G.synthesize(z), want)
    with pytest.raises(TlganError, match="3 x 3"):
        G.configure(input_transform=torch.eye(2))
    with pytest.raises(TlganError, match="last row"):
        G.configure(input_transform=torch.ones(3, 3))


def test_moving_the_input_of_t_by_whole_pixels_moves_the_image_by_as_many_pixels():
    # One output pixel is 1/R input units; the image follows its input away from the borders.
    G = tiny_stylegan3("t")
    z = _z(4, seed=11)
    base = G.synthesize_raw(G.map_latents(z, "z", "wp")).detach()
    border = 6
    inner = slice(border, 32 - border)
    errors = {}
    for dx, dy in ((2, 0), (0, 3), (-1, 2)):
        G.configure(input_transform=input_transform(0.0, (dx / 32, dy / 32)))
        moved = G.synthesize_raw(G.map_latents(z, "z", "wp")).detach()
        shifted = torch.roll(base, shifts=(dy, dx), dims=(2, 3))
        err = (moved - shifted)[:, :, inner, inner].abs()
        errors[(dx, dy)] = (float(err.max() / base.abs().max()), float(err.mean() / base.abs().mean()))
        other = (torch.roll(base, shifts=(dy, dx + 1), dims=(2, 3)) - moved)[:, :, inner, inner].abs()
        assert err.mean() < 0.25 * other.mean()  # the right shift fits far better than a pixel off
    print("translation by whole pixels, interior (max, mean) error relative to the image:", errors)
    assert max(e[1] for e in errors.values()) < 0.05


def test_turning_the_input_of_r_by_90_degrees_turns_the_image_counter_clockwise():
    # R's 1 x 1 convolutions and radial filters make it equivariant to rotation; a quarter turn
    # maps the sample grid onto itself, so it is exact away from the borders. T's 3 x 3 kernels are not.
    z = _z(2, seed=1)
    errors = {}
    for cfg in CONFIGS:
        G = tiny_stylegan3(cfg)
        wp = G.map_latents(z, "z", "wp")
        base = G.synthesize_raw(wp).detach()
        G.configure(input_transform=input_transform(90.0))
        turned = G.synthesize_raw(wp).detach()
        diff = (turned - torch.rot90(base, 1, dims=(2, 3)))[:, :, 6:26, 6:26]
        errors[cfg] = float(diff.abs().mean() / base.abs().mean())
    print("quarter turn, interior mean error relative to the image:", errors)
    assert errors["r"] < 1e-5 and errors["t"] > 0.1


# ---------------------------------------------------------------------------------------- formats


@pytest.mark.parametrize("cfg", CONFIGS)
def test_the_pickle_and_the_converted_folder_give_identical_images(nets, files, cfg, tmp_path):
    from click.testing import CliRunner

    from tlgan.cli import cli

    G = nets[cfg]
    z = _z(4, seed=9)
    want = G.synthesize(z)
    loaded = load_generator(str(files / f"sg3{cfg}.pkl"))
    assert isinstance(loaded, StyleGAN3Generator) and loaded.config_kwargs == G.config_kwargs
    assert torch.equal(loaded.synthesize(z), want)
    assert read_checkpoint(files / f"sg3{cfg}.pkl").architecture == "StyleGAN3Generator"
    result = CliRunner().invoke(
        cli, ["convert", str(files / f"sg3{cfg}.pkl"), "--out", str(tmp_path / "conv")]
    )
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "conv" / "model.json").read_text())
    assert config["architecture"] == "StyleGAN3Generator"
    assert config["converted_from"]["format"] == "nvlabs-pickle"
    assert torch.equal(load_generator(str(tmp_path / "conv")).synthesize(z), want)


def test_load_options_and_a_pickled_transform_survive_conversion(nets, tmp_path):
    M = input_transform(-20.0, (0.05, 0.1))
    H = load_generator(str(_pickle_of(nets["t"], tmp_path / "a.pkl")), truncation_psi=0.7, input_transform=M)
    assert H.options["truncation_psi"] == 0.7 and torch.equal(H.synthesis.input.transform, M)
    G = tiny_stylegan3("t").configure(input_transform=M)
    write_nvlabs_stylegan3_pickle(G, tmp_path / "moved.pkl")
    convert(tmp_path / "moved.pkl", tmp_path / "moved")
    z = _z()
    assert torch.equal(load_generator(str(tmp_path / "moved")).synthesize(z), G.synthesize(z))
    with pytest.raises(TlganError, match="unknown StyleGAN3 option"):
        load_generator(str(tmp_path / "a.pkl"), psi=0.7)
    from tlgan.models.formats.fixtures import tiny_stylegan2, write_nvlabs_pickle

    write_nvlabs_pickle(tiny_stylegan2(0), tmp_path / "sg2.pkl")
    with pytest.raises(TlganError, match=r"input_transform \(--rotate, --translate\) applies to StyleGAN3"):
        load_generator(str(tmp_path / "sg2.pkl"), input_transform=M)


def _pickle_of(G, path):
    write_nvlabs_stylegan3_pickle(G, path)
    return path


def test_foreign_settings_and_conditional_networks_are_named(nets, tmp_path):
    G = nets["t"]
    conditional = tmp_path / "cond.pkl"
    write_nvlabs_stylegan3_pickle(G, conditional, kwargs={**nvlabs_stylegan3_kwargs(G), "c_dim": 10})
    with pytest.raises(TlganError, match="conditional generator"):
        load_generator(str(conditional))
    odd = tmp_path / "odd.pkl"
    write_nvlabs_stylegan3_pickle(G, odd, kwargs={**nvlabs_stylegan3_kwargs(G), "fancy_layers": 3})
    with pytest.raises(TlganError, match="fancy_layers"):
        load_generator(str(odd))
    wrong = tmp_path / "wrong.pkl"
    write_nvlabs_stylegan3_pickle(G, wrong, kwargs={**nvlabs_stylegan3_kwargs(G), "num_layers": 5})
    with pytest.raises(TlganError, match="L5_32_8|unexpected|missing"):
        load_generator(str(wrong))


def test_hostile_pickles_are_refused_before_anything_runs(nets, tmp_path):
    marker = tmp_path / "pwned"

    class System:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    class Eval:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w').close()",)

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": System()}))
    with pytest.raises(TlganError, match="not a checkpoint format tlgan knows|refused"):
        load_generator(str(evil))
    with pytest.raises(RefusedGlobal, match="builtins.eval"):
        restricted_load(pickle.dumps(Eval()))
    module = types.ModuleType("not_a_module")
    module.Payload = type("Payload", (), {"__module__": "not_a_module"})
    sys.modules["not_a_module"] = module
    try:
        unknown = pickle.dumps(module.Payload())
    finally:
        del sys.modules["not_a_module"]
    with pytest.raises(RefusedGlobal, match="not_a_module.Payload"):
        restricted_load(unknown)
    assert "not_a_module" not in sys.modules
    # A hostile global inside a network: in the state of G_ema's synthesis input.
    inside = tmp_path / "inside.pkl"
    write_nvlabs_stylegan3_pickle(nets["t"], inside, extra_state={"synthesis.input": {"payload": System()}})
    with pytest.raises(RefusedGlobal, match=r"'(posix|os)\.system'"):
        load_generator(str(inside))
    with pytest.raises(RefusedGlobal, match="system"):
        convert(inside, tmp_path / "never")
    assert not marker.exists() and not (tmp_path / "never").exists()


def test_hub_spec_reads_a_stylegan3_pickle_from_the_cache(nets, files, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-sg3"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / "sg3r.pkl").write_bytes((files / "sg3r.pkl").read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    loaded = load_generator("hf://someone/tiny-sg3/sg3r.pkl")
    assert torch.equal(loaded.synthesize(_z()), nets["r"].synthesize(_z()))


# ------------------------------------------------------------------- inversion, tuning, the CLI


def test_inversion_in_w_and_wp_and_pivotal_tuning(nets, tmp_path):
    from tlgan.inversion.encoder import psnr_db
    from tlgan.inversion.optimize import invert, mean_latent
    from tlgan.inversion.tune import save_tuned, tune_generator

    G = nets["t"]
    target = G.synthesize(_z(1, seed=21)).detach()
    start = psnr_db(G.synthesize(mean_latent(G, "w"), "w").detach(), target)
    found = {}
    for space in ("w", "wp"):
        result = invert(G, target, space=space, steps=40)
        assert result.latents.shape == (1, *G.latent_shape(space))
        found[space] = float(result.psnr_db[0])
    print("inversion PSNR (dB) from w_avg", float(start[0]), "->", found)
    assert found["w"] > float(start[0]) + 3 and found["wp"] >= found["w"] - 0.5
    pivot = invert(G, target, space="w", steps=10).latents[0]
    tuned = tune_generator(G, target[0], pivot, space="w", steps=15, locality_weight=0.0)
    assert tuned.psnr_db > tuned.start_psnr_db
    folder = save_tuned(tuned, tmp_path / "tuned", base_spec="sg3t.pkl", space="w")
    again = load_generator(str(folder))
    assert isinstance(again, StyleGAN3Generator)
    assert torch.equal(again.synthesize(pivot[None], "w"), tuned.generator.synthesize(pivot[None], "w"))


def test_cli_samples_fits_edits_and_turns_a_stylegan3(files, tmp_path):
    from click.testing import CliRunner

    from tlgan.axes import FeatureAxes
    from tlgan.cli import cli
    from tlgan.editing.latent_file import load_latent

    gen = str(files / "sg3t.pkl")
    clf = tmp_path / "clf.py"
    clf.write_text(
        "import torch\nfrom tlgan.models import ModuleClassifier\n"
        "class M(torch.nn.Module):\n    def forward(self, x):\n"
        "        return torch.stack([x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))], 1) * 10\n"
        "def classifier():\n    return ModuleClassifier(M(), ['Red', 'Blue'], input_resolution=32)\n"
    )
    runner = CliRunner()
    run = tmp_path / "run"
    args = ["sample", "--generator", gen, "--classifier", f"{clf}:classifier", "-n", "64", "--out", str(run)]
    result = runner.invoke(cli, [*args, "--truncation", "0.7", "--truncation-cutoff", "4"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["space"] == "w"
    assert manifest["generator_options"] == {"truncation_psi": 0.7, "truncation_cutoff": 4}
    axes_path = tmp_path / "axes.safetensors"
    result = runner.invoke(cli, ["fit", str(run), "--method", "glm", "--out", str(axes_path)])
    assert result.exit_code == 0, result.output
    assert FeatureAxes.load(axes_path).space == "w"
    edit = [
        "edit",
        "--generator",
        gen,
        "--axes",
        str(axes_path),
        "--seed",
        "3",
        "--attr",
        "Red=2",
        "--upscale",
        "1",
    ]
    result = runner.invoke(
        cli,
        [*edit, "--layers", "1-3", "--out", str(tmp_path / "e.png"), "--save-latent", str(tmp_path / "e.st")],
    )
    assert result.exit_code == 0, result.output
    edited, meta = load_latent(tmp_path / "e.st")
    base = load_generator(gen).sample_latents_at([3], seed=0, space="wp")[0]
    assert meta["space"] == "wp" and "input_transform" not in meta
    assert torch.equal(edited[0], base[0]) and torch.equal(edited[4:], base[4:])
    # The same edit, turned and moved: the latent is the same, the transform is recorded.
    result = runner.invoke(
        cli,
        [
            *edit,
            "--layers",
            "1-3",
            "--rotate",
            "12",
            "--translate",
            "0.1,-0.05",
            "--out",
            str(tmp_path / "t.png"),
            "--save-latent",
            str(tmp_path / "t.st"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    turned, meta = load_latent(tmp_path / "t.st")
    assert torch.equal(turned, edited)
    assert meta["input_transform"] == {"rotate": 12.0, "translate": [0.1, -0.05]}
    assert json.loads(result.output)["input_transform"] == meta["input_transform"]
    from tlgan.imaging import load_image

    plain, moved = load_image(tmp_path / "e.png", 32), load_image(tmp_path / "t.png", 32)
    H = load_generator(gen, input_transform=input_transform(12.0, (0.1, -0.05)))
    want = H.synthesize(turned[None], "wp")[0]
    assert (moved - want).abs().max() < 2 / 255 + 1e-6 and (plain - moved).abs().mean() > 0.01
    result = runner.invoke(cli, [*edit, "--translate", "0.1", "--out", str(tmp_path / "x.png")])
    assert result.exit_code != 0 and "X,Y" in str(result.exception)
    result = runner.invoke(
        cli,
        ["grid", "--generator", gen, "--axes", str(axes_path), "--steps", "-1,0,1", "--rotate", "90"]
        + ["--out", str(tmp_path / "g.png")],
    )
    assert result.exit_code == 0, result.output
