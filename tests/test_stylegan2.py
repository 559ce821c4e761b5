"""StyleGAN2: the network, its checkpoint formats (read without running code), and the z / w / wp spaces."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from stylegan_fixtures import nvlabs_kwargs, tiny_stylegan2, write_nvlabs_pickle, write_rosinality
from tlgan.axes.interfacegan import export_boundaries, import_boundaries, parse_boundary_name
from tlgan.editing.edit import edit_latents
from tlgan.editing.latent_file import load_latent, save_latent
from tlgan.errors import TlganError
from tlgan.models import ModuleClassifier, load_generator
from tlgan.models.base import Generator
from tlgan.models.formats import convert, read_checkpoint
from tlgan.models.formats.unpickler import RefusedGlobal, restricted_load
from tlgan.models.stylegan2 import MappingNetwork, StyleGAN2Generator

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G():
    return tiny_stylegan2(0)


@pytest.fixture(scope="module")
def files(G, tmp_path_factory):
    root = tmp_path_factory.mktemp("sg2")
    write_nvlabs_pickle(G, root / "network.pkl")
    write_rosinality(G, root / "g.pt")
    write_rosinality(G, root / "train.pt", full=True)
    return root


def _z(n=4, seed=3, dim=16):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------- network


def test_vocabulary_and_shapes(G):
    assert (G.z_dim, G.w_dim, G.num_ws, G.img_resolution) == (16, 16, 8, 32)
    assert G.synthesis.channels == {4: 16, 8: 16, 16: 8, 32: 4}
    assert G.latent_shape("wp") == (8, 16) and G.latent_dim("wp") == 16
    images = G.synthesize(_z())
    assert images.shape == (4, 3, 32, 32) and images.abs().max() <= 1.0
    with pytest.raises(TlganError, match=r"space 'wp' needs 8 x 16"):
        G.synthesize(torch.zeros(2, 16), "wp")
    with pytest.raises(TlganError, match="no latent space 'x'"):
        G.synthesize(_z(), "x")
    with pytest.raises(TlganError, match="4 \\* 2\\^k"):
        StyleGAN2Generator(img_resolution=48)


def test_z_to_w_to_image_equals_z_to_image_and_const_noise_is_deterministic(G):
    z = _z()
    w = G.map_latents(z, "z", "w")
    wp = G.map_latents(w, "w", "wp")
    a = G.synthesize(z)
    assert torch.equal(a, G.synthesize(w, "w")) and torch.equal(a, G.synthesize(wp, "wp"))
    assert torch.equal(a, G.synthesize(z))
    assert torch.equal(
        G.sample_latents_at([5], seed=2, space="w")[0],
        G.map_latents(G.sample_latents_at([5], seed=2), "z", "w")[0],
    )
    with pytest.raises(TlganError, match="back to 'z'"):
        G.map_latents(w, "w", "z")
    noisy = tiny_stylegan2(0).configure(noise_mode="random")
    torch.manual_seed(0)
    assert not torch.equal(noisy.synthesize(z), a)  # noise strengths are non-zero in the fixture


def test_truncation(G):
    z = _z()
    H = tiny_stylegan2(0).configure(truncation_psi=0.0)
    w_avg_image = G.synthesize(G.mapping.w_avg[None].repeat(4, 1), "w")
    assert torch.allclose(H.synthesize(z), w_avg_image, atol=1e-6)
    assert H.options == {"truncation_psi": 0.0}
    # psi with a cutoff truncates only the first layers of wp: the other layers keep the mapping's w.
    C = tiny_stylegan2(0).configure(truncation_psi=0.5, truncation_cutoff=3)
    wp = C.map_latents(z, "z", "wp")
    w = G.map_latents(z, "z", "w")
    assert torch.allclose(wp[:, 3:], w[:, None].expand(-1, 5, -1))
    assert torch.allclose(
        wp[:, :3], (G.mapping.w_avg + 0.5 * (w - G.mapping.w_avg))[:, None].expand(-1, 3, -1), atol=1e-6
    )
    with pytest.raises(TlganError, match="truncation_cutoff must be 1..8"):
        C.configure(truncation_cutoff=9)
    with pytest.raises(TlganError, match="takes no options"):
        Generator().configure(truncation_psi=0.7)


# ---------------------------------------------------------------------------------------- formats


def test_both_formats_load_to_the_same_network(G, files):
    z = _z()
    want = G.synthesize(z)
    for name in ("network.pkl", "g.pt", "train.pt"):
        loaded = load_generator(str(files / name))
        assert isinstance(loaded, StyleGAN2Generator), name
        assert loaded.config_kwargs == G.config_kwargs, name
        assert torch.equal(loaded.synthesize(z), want), name
    assert read_checkpoint(files / "network.pkl").format == "nvlabs-pickle"
    assert read_checkpoint(files / "train.pt").format == "rosinality"


def test_truncation_is_a_load_option(G, files):
    H = load_generator(str(files / "network.pkl"), truncation_psi=0.7, truncation_cutoff=4)
    assert H.options == {"truncation_psi": 0.7, "truncation_cutoff": 4}
    with pytest.raises(TlganError, match="unknown StyleGAN2 option"):
        load_generator(str(files / "g.pt"), psi=0.7)


def test_convert_gives_bit_identical_images(G, files, tmp_path):
    from click.testing import CliRunner

    from tlgan.cli import cli

    result = CliRunner().invoke(cli, ["convert", str(files / "network.pkl"), "--out", str(tmp_path / "conv")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "conv" / "model.json").read_text())
    assert config["architecture"] == "StyleGAN2Generator"
    assert config["converted_from"]["format"] == "nvlabs-pickle"
    z = _z(8, seed=9)
    assert torch.equal(load_generator(str(tmp_path / "conv")).synthesize(z), G.synthesize(z))
    convert(files / "g.pt", tmp_path / "conv2")
    assert torch.equal(load_generator(str(tmp_path / "conv2")).synthesize(z), G.synthesize(z))


def test_rosinality_key_table_round_trips(G):
    from tlgan.models.formats import rosinality

    ros, latent_avg = rosinality.from_tlgan(G.state_dict(), 5, 2)
    back = rosinality.to_tlgan(ros, latent_avg)
    assert set(back) == set(G.state_dict())
    assert all(torch.equal(back[k], v) for k, v in G.state_dict().items())
    assert ros["convs.0.conv.weight"].shape == (1, 16, 16, 3, 3) and ros["to_rgb1.bias"].shape == (1, 3, 1, 1)


def _side_effect_pickle(target: Path) -> bytes:
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {target}",)

    return pickle.dumps({"G_ema": Evil()})


def test_malicious_pickles_are_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(_side_effect_pickle(marker))
    with pytest.raises(RefusedGlobal, match=r"'(posix|os)\.system'"):
        restricted_load(evil.read_bytes(), source=str(evil))
    with pytest.raises(TlganError, match="not a checkpoint format tlgan knows|refused"):
        load_generator(str(evil))
    assert not marker.exists()

    class Eval:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w').close()",)

    with pytest.raises(RefusedGlobal, match="builtins.eval"):
        restricted_load(pickle.dumps(Eval()))
    assert not marker.exists()
    import types

    module = types.ModuleType("not_a_module")
    module.Payload = type("Payload", (), {"__module__": "not_a_module"})
    sys.modules["not_a_module"] = module
    try:
        unknown = pickle.dumps(module.Payload())
    finally:
        del sys.modules["not_a_module"]
    with pytest.raises(RefusedGlobal, match="not_a_module.Payload"):
        restricted_load(unknown)
    assert "not_a_module" not in sys.modules  # refused before any import was tried


def test_a_network_pickle_with_a_hostile_global_inside_is_refused(G, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "network.pkl"
    write_nvlabs_pickle(G, path, extra={"augment_pipe": Evil()})
    with pytest.raises(RefusedGlobal, match="system"):
        load_generator(str(path))
    assert not marker.exists()


def test_corrupt_truncated_and_foreign_checkpoints_name_the_problem(G, files, tmp_path):
    data = (files / "network.pkl").read_bytes()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(TlganError, match=r"cut\.pkl.*(truncated|corrupt)"):
        load_generator(str(cut))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(TlganError, match=r"bad\.pt"):
        load_generator(str(bad))
    other = tmp_path / "other.pt"
    torch.save({"g_ema": {"input.input": torch.zeros(1, 4, 4, 4)}}, other)
    with pytest.raises(TlganError, match=r"other\.pt.*style\.1\.weight"):
        load_generator(str(other))
    conditional = tmp_path / "cond.pkl"
    write_nvlabs_pickle(G, conditional, kwargs={**nvlabs_kwargs(G), "c_dim": 10})
    with pytest.raises(TlganError, match="conditional generator"):
        load_generator(str(conditional))
    resnet = tmp_path / "resnet.pkl"
    kw = nvlabs_kwargs(G)
    kw["synthesis_kwargs"]["architecture"] = "resnet"
    write_nvlabs_pickle(G, resnet, kwargs=kw)
    with pytest.raises(TlganError, match="architecture='resnet' is not supported"):
        load_generator(str(resnet))


def test_hub_spec_reads_the_filled_cache_offline(G, files, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    # The Hub's cache layout: models--OWNER--REPO/{refs/main, snapshots/COMMIT/PATH}.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-gan"
    (repo / "snapshots" / commit / "nets").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit / "nets" / "network.pkl").write_bytes((files / "network.pkl").read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    loaded = load_generator("hf://someone/tiny-gan/nets/network.pkl")
    assert torch.equal(loaded.synthesize(_z()), G.synthesize(_z()))
    with pytest.raises(TlganError, match="not in the Hub cache"):
        load_generator("hf://someone/tiny-gan/nets/missing.pkl")
    with pytest.raises(TlganError, match="hf://OWNER/REPO/PATH"):
        load_generator("hf://someone/only-repo")


# ---------------------------------------------------------------------------------------- spaces


def test_wp_edit_on_layers_moves_only_those_layers(G):
    from tlgan.axes import FeatureAxes

    axes = FeatureAxes(torch.nn.functional.normalize(torch.randn(2, 16), dim=1), ["A", "B"], space="w")
    wp = G.map_latents(_z(2), "z", "wp").detach()
    edited = edit_latents(wp, axes, {"A": 2.0}, space="wp", layers=range(0, 4))
    assert torch.equal(edited[:, 4:], wp[:, 4:])
    assert torch.allclose(edited[:, :4] - wp[:, :4], 2.0 * axes["A"].expand(2, 4, -1), atol=1e-6)
    everywhere = edit_latents(wp[0], axes, {"A": 1.0}, space="wp")
    assert torch.allclose(everywhere - wp[0], axes["A"].expand(8, -1), atol=1e-6)
    with pytest.raises(TlganError, match="layer\\(s\\) \\[9\\]"):
        edit_latents(wp, axes, {"A": 1.0}, space="wp", layers=[9])
    with pytest.raises(TlganError, match="axes fitted in 'w' cannot move latents of space 'z'"):
        edit_latents(torch.zeros(16), axes, {"A": 1.0}, space="z")


def test_latent_files_keep_the_wp_shape(G, tmp_path):
    wp = G.map_latents(_z(1), "z", "wp")[0].detach()
    save_latent(tmp_path / "a.safetensors", wp, space="wp", generator="g")
    back, meta = load_latent(tmp_path / "a.safetensors")
    assert meta["space"] == "wp" and torch.equal(back, wp)
    with pytest.raises(TlganError, match="num_ws, w_dim"):
        save_latent(tmp_path / "b.safetensors", torch.zeros(16), space="wp")


def test_interfacegan_names_carry_space_and_conditions(tmp_path):
    name = parse_boundary_name("stylegan_ffhq_smile_w_boundary.npy")
    assert (name.attribute, name.space, name.prefix) == ("smile", "w", "stylegan_ffhq")
    cond = parse_boundary_name("pggan_celebahq_age_c_gender_eyeglasses_boundary.npy")
    assert (cond.attribute, cond.space, cond.conditions, cond.axis_name) == (
        "age",
        "z",
        ("gender", "eyeglasses"),
        "age_c_gender_eyeglasses",
    )
    assert parse_boundary_name("Mouth_Slightly_Open_boundary.npy").attribute == "Mouth_Slightly_Open"
    np.save(tmp_path / "stylegan_ffhq_smile_w_boundary.npy", np.ones((1, 4), np.float32))
    np.save(tmp_path / "stylegan_ffhq_age_w_boundary.npy", np.arange(4, dtype=np.float32)[None])
    axes = import_boundaries(tmp_path)
    assert axes.space == "w" and axes.attributes == ["age", "smile"]
    written = export_boundaries(axes, tmp_path / "out", prefix="stylegan_ffhq")
    assert sorted(p.name for p in written) == [
        "stylegan_ffhq_age_w_boundary.npy",
        "stylegan_ffhq_smile_w_boundary.npy",
    ]
    np.save(tmp_path / "stylegan_ffhq_pose_boundary.npy", np.ones((1, 4), np.float32))
    with pytest.raises(TlganError, match="several spaces"):
        import_boundaries(tmp_path)


# ------------------------------------------------------------------- a planted direction in w


class _WorldOfW(Generator):
    """z -> w through a real (nonlinear) StyleGAN2 mapping network; the image is a fixed linear
    mix of w, so a classifier can read w back exactly. The attribute is linear in w, not in z."""

    name = "w-world"
    spaces = ("z", "w", "wp")

    def __init__(self, dim: int = 12, num_ws: int = 4):
        super().__init__()
        torch.manual_seed(4)
        self.z_dim = self.w_dim = dim
        self.num_ws = num_ws
        self.img_resolution = 8
        self.mapping = MappingNetwork(dim, dim, num_layers=4, lr_multiplier=1.0)
        g = torch.Generator().manual_seed(5)
        self.register_buffer("mix", torch.randn(3 * 64, dim, generator=g) / (4 * dim**0.5))

    def _map_latents(self, x, space, to):
        if space == "z":
            x = self.mapping(x)
            if to == "w":
                return x
        return x[:, None].repeat(1, self.num_ws, 1)

    def _synthesize(self, latents, space):
        w = (
            latents
            if space == "w"
            else (self._map_latents(latents, space, "w") if space == "z" else latents.mean(1))
        )
        return torch.tanh(w @ self.mix.T).reshape(-1, 3, 8, 8)


class _ReadW(torch.nn.Module):
    def __init__(self, world: _WorldOfW, direction: torch.Tensor, bias: float):
        super().__init__()
        self.register_buffer("readout", direction @ torch.linalg.pinv(world.mix))
        self.bias = bias

    def forward(self, images):
        pre = torch.atanh(images.reshape(len(images), -1).clamp(-0.999999, 0.999999))
        return pre @ self.readout.T - self.bias  # logit = w . d - b: soft, never clipped


def test_a_planted_direction_in_w_is_recovered_in_w_better_than_in_z(tmp_path):
    from tlgan.pipeline import fit_axes
    from tlgan.sampling import sample

    world = _WorldOfW().eval()
    w = world.sample_latents(4000, seed=1, space="w")
    direction = torch.nn.functional.normalize(
        torch.randn(1, 12, generator=torch.Generator().manual_seed(8)), dim=1
    )
    bias = float((w @ direction[0]).median())
    clf = ModuleClassifier(_ReadW(world, direction, bias), ["Planted"], input_resolution=8).eval()
    cos = {}
    for space in ("w", "z"):
        run = sample(world, clf, 4000, tmp_path / space, seed=1, space=space, progress=False)
        assert run.space == space and run.latents().shape == (4000, 12)
        # glm: least squares of the logit, the estimator that is exact for a logit linear in the latent.
        axes = fit_axes(run, "glm")
        assert axes.space == space
        cos[space] = float(torch.dot(axes["Planted"], direction[0]))
    print("cosine to the planted w direction (glm):", cos)
    assert cos["w"] >= 0.99
    assert cos["z"] < 0.9  # the mapping is nonlinear: no straight line in z follows the attribute


def test_cli_samples_fits_and_edits_in_w_with_truncation(G, files, tmp_path):
    from click.testing import CliRunner

    from tlgan.cli import cli

    gen = str(files / "g.pt")
    clf = tmp_path / "clf.py"
    clf.write_text(
        "import torch\nfrom tlgan.models import ModuleClassifier\n"
        "class M(torch.nn.Module):\n    def forward(self, x):\n"
        "        return torch.stack([x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))], 1) * 10\n"
        "def classifier():\n    return ModuleClassifier(M(), ['Red', 'Blue'], input_resolution=32)\n"
    )
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(
        cli,
        [
            "sample",
            "--generator",
            gen,
            "--classifier",
            f"{clf}:classifier",
            "-n",
            "300",
            "--out",
            str(run),
            "--truncation",
            "0.7",
            "--shard-size",
            "128",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["space"] == "w" and manifest["generator_options"] == {"truncation_psi": 0.7}
    H = load_generator(gen, truncation_psi=0.7)
    from tlgan.sampling import Run

    assert torch.allclose(Run.open(run).latents()[:5], H.sample_latents(5, space="w"))
    result = runner.invoke(
        cli, ["fit", str(run), "--method", "glm", "--out", str(tmp_path / "axes.safetensors")]
    )
    assert result.exit_code == 0, result.output
    from tlgan.axes import FeatureAxes

    axes = FeatureAxes.load(tmp_path / "axes.safetensors")
    assert axes.space == "w" and axes.info["generator_options"] == {"truncation_psi": 0.7}
    result = runner.invoke(
        cli,
        [
            "edit",
            "--generator",
            gen,
            "--axes",
            str(tmp_path / "axes.safetensors"),
            "--seed",
            "3",
            "--attr",
            "Red=2",
            "--layers",
            "0-3",
            "--out",
            str(tmp_path / "e.png"),
            "--save-latent",
            str(tmp_path / "e.safetensors"),
            "--truncation",
            "0.7",
        ],
    )
    assert result.exit_code == 0, result.output
    edited, meta = load_latent(tmp_path / "e.safetensors")
    base = H.sample_latents_at([3], seed=0, space="wp")[0]
    assert meta["space"] == "wp" and edited.shape == (8, 16)
    assert torch.equal(edited[4:], base[4:]) and not torch.allclose(edited[:4], base[:4])
    result = runner.invoke(
        cli,
        [
            "grid",
            "--generator",
            gen,
            "--axes",
            str(tmp_path / "axes.safetensors"),
            "--latent",
            str(tmp_path / "e.safetensors"),
            "--steps",
            "-1,0,1",
            "--layers",
            "6-7",
            "--out",
            str(tmp_path / "g.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli,
        [
            "sample",
            "--generator",
            gen,
            "--classifier",
            f"{clf}:classifier",
            "-n",
            "300",
            "--out",
            str(run),
            "--resume",
        ],
    )
    assert result.exit_code != 0 and "generator_options" in str(result.exception or result.output)


def test_the_studio_serves_a_stylegan2_in_w(G, files, tmp_path):
    from fastapi.testclient import TestClient

    from tlgan.axes import FeatureAxes
    from tlgan.studio.app import create_app

    axes = FeatureAxes(
        torch.nn.functional.normalize(torch.randn(2, 16, generator=torch.Generator().manual_seed(2)), dim=1),
        ["Red", "Blue"],
        space="w",
        generator="unknown",
    )
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    F = ModuleClassifier(net, ["Red", "Blue"], input_resolution=32).eval()
    H = load_generator(str(files / "network.pkl"), truncation_psi=0.7)
    client = TestClient(create_app(H, F, axes))
    reply = client.post("/api/render", json={"seed": 5, "amounts": {"Red": 1.5}})
    assert reply.status_code == 200, reply.text
    base = H.sample_latents_at([5], seed=0, space="w")[0]
    latent = torch.tensor(reply.json()["latent"], dtype=torch.float32)
    assert reply.json()["space"] == "w"
    assert torch.allclose(latent, edit_latents(base, axes, {"Red": 1.5}), atol=1e-6)
    wrong = client.post("/api/render", json={"latent": [0.0] * 512})
    assert wrong.status_code == 422 and "needs 16 (space 'w')" in wrong.text


def test_a_wp_encoder_starts_a_wp_search_and_refuses_z(G):
    from tlgan.inversion.encoder import WPEncoder
    from tlgan.inversion.optimize import invert

    torch.manual_seed(0)
    encoder = WPEncoder(w_dim=16, num_ws=8, resolution=32, width=8).eval()
    images = G.synthesize(_z(2)).detach()
    result = invert(G, images, encoder=encoder, space="wp", steps=2)
    assert result.latents.shape == (2, 8, 16)
    with pytest.raises(TlganError, match="a wp encoder cannot start a search in 'z'"):
        invert(G, images, encoder=encoder, space="z", steps=1)
    with pytest.raises(TlganError, match="use the generator's own encoder"):
        invert(G, images, encoder=WPEncoder(w_dim=16, num_ws=6, resolution=32, width=8), space="wp", steps=1)
