"""PGGAN and StyleGAN (v1): the networks' semantics, and the InterFaceGAN .pth and NVlabs TF pickle formats."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seed_fixtures import (
    TINY_STYLEGAN,
    interfacegan_state,
    tiny_pggan,
    tiny_stylegan,
    write_pth,
    write_tf_pickle,
)
from tlgan.errors import TlganError
from tlgan.io import load_tensors, read_json
from tlgan.models import load_generator
from tlgan.models.formats import convert, read_checkpoint, tf_pickle
from tlgan.models.formats.genforce import truncation_from_coefficients
from tlgan.models.formats.unpickler import RefusedGlobal
from tlgan.models.pggan import PGGANLayer, fused_upsample_kernel, pixel_norm, upscale2d
from tlgan.models.stylegan1 import ConvLayer


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def raw_images(G, latents, space="z"):
    """Unclamped images: random weights put many pixels outside [-1, 1], which a clamp would hide."""
    if hasattr(G, "mapping"):
        wp = latents if space == "wp" else G.map_latents(latents, space, "wp")
        return G.synthesis(wp, G.noise_mode)
    return G.synthesis(latents)


# ---- the networks ---------------------------------------------------------------------------


def test_fused_upsampling_equals_nearest_upsampling_then_the_rotated_convolution():
    torch.manual_seed(0)
    weight = torch.randn(3, 3, 5, 7)  # (K, K, in, out)
    x = torch.randn(2, 5, 6, 6)
    fused = F.conv_transpose2d(x, fused_upsample_kernel(weight), stride=2, padding=1)
    separate = F.conv2d(upscale2d(x), weight.flip(0, 1).permute(3, 2, 0, 1), padding=1)
    assert torch.allclose(fused, separate, atol=1e-5)
    assert not torch.allclose(fused, F.conv2d(upscale2d(x), weight.permute(3, 2, 0, 1), padding=1), atol=1e-2)


def test_pggan_fused_and_nearest_layers_agree_with_the_same_weights():
    torch.manual_seed(1)
    nearest = PGGANLayer(6, 4, upsample="nearest")
    fused = PGGANLayer(6, 4, upsample="fused")
    fused.weight.copy_(nearest.conv.weight.flip(2, 3).permute(2, 3, 1, 0))
    fused.wscale.bias.copy_(torch.randn(4))
    nearest.wscale.bias.copy_(fused.wscale.bias)
    x = torch.randn(3, 6, 4, 4)
    assert torch.allclose(fused(x), nearest(x), atol=1e-5)


def test_pggan_z_lives_on_the_sphere_and_its_scale_does_not_change_the_image():
    G = tiny_pggan()
    z = G.sample_latents(5, seed=3)
    assert torch.allclose(z.norm(dim=1), torch.full((5,), math.sqrt(G.z_dim)), atol=1e-4)
    raw = torch.from_numpy(np.random.default_rng(0).standard_normal((5, G.z_dim)).astype(np.float32))
    assert torch.allclose(raw_images(G, raw), raw_images(G, 3.5 * raw), atol=1e-5)
    assert not torch.allclose(raw_images(G, z[:1]), raw_images(G, z[1:2]))


def test_pggan_latent_weight_is_the_dense_layer_on_z():
    G = tiny_pggan()
    z = G.sample_latents(4, seed=1)
    A = G.latent_weight("z")
    assert A.shape == (G.channels[0] * 16, G.z_dim)
    conv = G.layer0
    pre_activation = (
        F.conv2d(pixel_norm(z)[:, :, None, None], conv.conv.weight, padding=3) * conv.wscale.scale
    )
    assert torch.allclose(pixel_norm(z) @ A.t(), pre_activation.reshape(4, -1), atol=1e-5)
    with pytest.raises(TlganError, match="first layer only"):
        G.latent_weight("z", layers=[1])


def test_pggan_level_of_detail_blends_coarser_levels():
    G = tiny_pggan()
    z = G.sample_latents(2, seed=0)
    full = raw_images(G, z)
    G.lod.fill_(1.0)
    coarse = raw_images(G, z)
    assert torch.equal(coarse, upscale2d(F.avg_pool2d(coarse, 2)))  # constant on 2x2 blocks: a 16 px image
    G.lod.fill_(0.25)
    assert torch.allclose(raw_images(G, z), 0.75 * full + 0.25 * coarse, atol=1e-5)


def test_stylegan_truncation_semantics():
    G = tiny_stylegan(truncation_psi=1.0, truncation_cutoff=None)
    z = G.sample_latents(3, seed=2)
    w = G.map_latents(z, "z", "w")
    w_avg = G.truncation.w_avg
    G.configure(truncation_psi=0.5, truncation_cutoff=3)
    assert torch.equal(G.map_latents(z, "z", "w"), w)  # with a cutoff, w stays the mapping's output
    wp = G.map_latents(z, "z", "wp")
    assert torch.allclose(wp[:, :3], (w_avg + 0.5 * (w - w_avg))[:, None].expand(-1, 3, -1), atol=1e-6)
    assert torch.equal(wp[:, 3:], w[:, None].expand(-1, G.num_ws - 3, -1))
    assert torch.allclose(raw_images(G, w, "w"), raw_images(G, wp, "wp"))
    assert G.options == {"truncation_psi": 0.5, "truncation_cutoff": 3}
    fresh = tiny_stylegan(truncation_psi=0.5, truncation_cutoff=None)
    assert torch.allclose(fresh.map_latents(z, "z", "w"), w_avg + 0.5 * (w - w_avg), atol=1e-6)
    with pytest.raises(TlganError, match="truncation_cutoff must be 1..8"):
        G.configure(truncation_cutoff=9)
    with pytest.raises(TlganError, match="unknown StyleGAN option"):
        G.configure(psi=0.7)


def test_stylegan_latent_weight_is_the_style_affine():
    G = tiny_stylegan()
    w = G.map_latents(G.sample_latents(2, seed=0), "z", "w")
    A = G.latent_weight("w", layers=[2])
    dense = G.synthesis.layer2.epilogue.style_mod.dense
    assert torch.allclose(w @ A.t() + dense.wscale.bias, dense(w), atol=1e-6)
    assert G.latent_weight("w").shape[0] == sum(
        2 * layer.epilogue.bias.shape[0] for layer in G.synthesis.layers()
    )
    with pytest.raises(TlganError, match="do not exist"):
        G.latent_weight("w", layers=[G.num_ws])


def test_stylegan_noise_modes_and_fused_layers():
    G = tiny_stylegan()
    wp = G.map_latents(G.sample_latents(2, seed=0), "z", "wp")
    const = raw_images(G, wp, "wp")
    assert torch.equal(const, raw_images(G, wp, "wp"))
    G.configure(noise_mode="none")
    assert not torch.allclose(raw_images(G, wp, "wp"), const)
    # A fused upsampling layer and a nearest one with the same kernel give the same output.
    torch.manual_seed(0)
    nearest, fused = ConvLayer(6, 4, 8, 16, upsample=True), ConvLayer(6, 4, 8, 16, upsample=True, fused=True)
    fused.load_state_dict(
        {
            ("weight" if k == "conv.weight" else k): (
                v.flip(2, 3).permute(2, 3, 1, 0) if k == "conv.weight" else v
            )
            for k, v in nearest.state_dict().items()
        }
    )
    x, w = torch.randn(2, 6, 8, 8), torch.randn(2, 8)
    assert torch.allclose(fused(x, w, "const"), nearest(x, w, "const"), atol=1e-5)


# ---- the formats ----------------------------------------------------------------------------

NETWORKS = {
    "pggan": lambda: tiny_pggan(seed=1),
    "pggan-fused": lambda: tiny_pggan(seed=2, fused_scale=True),
    "stylegan": lambda: tiny_stylegan(seed=3),
    "stylegan-fused": lambda: tiny_stylegan(seed=4, fused_scale=True),
}


def _latents(G):
    return G.sample_latents(3, seed=7)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_format_loads_the_same_network(name, tmp_path):
    G = NETWORKS[name]()
    write_pth(G, tmp_path / "zip.pth")
    write_pth(G, tmp_path / "legacy.pth", legacy=True)
    write_tf_pickle(G, tmp_path / "tf.pkl")
    z = _latents(G)
    expected = raw_images(G, z)
    formats = {"zip.pth": "interfacegan-pth", "legacy.pth": "interfacegan-pth", "tf.pkl": "nvlabs-tf-pickle"}
    for file, fmt in formats.items():
        checkpoint = read_checkpoint(tmp_path / file)
        assert checkpoint.format == fmt
        assert checkpoint.kwargs == G.config_kwargs, file
        loaded = load_generator(str(tmp_path / file))
        assert type(loaded) is type(G)
        assert torch.equal(raw_images(loaded, z), expected), file
        if hasattr(G, "mapping"):
            w = G.map_latents(z, "z", "w")
            assert torch.equal(raw_images(loaded, w, "w"), raw_images(G, w, "w"))
            assert loaded.options == {"truncation_psi": 0.7, "truncation_cutoff": 8}


@pytest.mark.parametrize("name", ["pggan", "stylegan-fused"])
def test_converted_folders_are_bit_identical(name, tmp_path):
    G = NETWORKS[name]()
    write_pth(G, tmp_path / "g.pth", legacy=True)
    write_tf_pickle(G, tmp_path / "g.pkl")
    a, b = (
        convert(tmp_path / "g.pth", tmp_path / "from_pth"),
        convert(tmp_path / "g.pkl", tmp_path / "from_pkl"),
    )
    (ta, _), (tb, _) = load_tensors(a / "model.safetensors"), load_tensors(b / "model.safetensors")
    assert list(ta) == list(tb) and all(ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]) for k in ta)
    ja, jb = read_json(a / "model.json"), read_json(b / "model.json")
    assert ja.pop("converted_from")["format"] == "interfacegan-pth"
    assert jb.pop("converted_from")["format"] == "nvlabs-tf-pickle"
    assert ja == jb and ja["kwargs"] == G.config_kwargs
    again = convert(tmp_path / "g.pkl", tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    folder = load_generator(str(a))
    z = _latents(G)
    assert torch.equal(raw_images(folder, z), raw_images(G, z))
    assert folder.options == G.options


def test_tf_pickle_builds_nothing_and_runs_no_source(tmp_path):
    marker = tmp_path / "ran"
    G = tiny_stylegan(seed=5)
    write_tf_pickle(G, tmp_path / "g.pkl", marker=str(marker), protocol=2)
    loaded = load_generator(str(tmp_path / "g.pkl"))
    assert not marker.exists()
    z = _latents(G)
    assert torch.equal(raw_images(loaded, z), raw_images(G, z))
    gs = tf_pickle.load_networks(tmp_path / "g.pkl")[2]
    assert gs.build_func_name == "G_style" and set(gs.components) == {"mapping", "synthesis"}


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_tf_pickle_with_an_unexpected_global_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "ran"
    G = tiny_pggan(seed=1)
    write_tf_pickle(G, tmp_path / "g.pkl", gs_kwargs={"payload": _Hostile(marker)})
    with pytest.raises(RefusedGlobal, match="posix.system|os.system"):
        load_generator(str(tmp_path / "g.pkl"))
    assert not marker.exists()


def test_tf_pickle_truncation_from_static_kwargs_and_option_override(tmp_path):
    G = tiny_stylegan(seed=6)
    write_tf_pickle(G, tmp_path / "g.pkl", gs_kwargs={"truncation_psi": 0.5, "truncation_cutoff": 4})
    loaded = load_generator(str(tmp_path / "g.pkl"))
    assert loaded.options == {"truncation_psi": 0.5, "truncation_cutoff": 4}
    loaded = load_generator(str(tmp_path / "g.pkl"), truncation_psi=1.0)
    assert loaded.options == {}
    write_tf_pickle(G, tmp_path / "none.pkl", gs_kwargs={"truncation_psi": None})
    assert load_generator(str(tmp_path / "none.pkl")).options == {}


def test_tables_cover_every_parameter_and_invert():
    for G, rows in (
        (tiny_pggan(), tf_pickle.pggan_table(5, False)),
        (tiny_pggan(fused_scale=True), tf_pickle.pggan_table(5, True)),
    ):
        assert {own for _, own, _ in rows} == set(G.state_dict())
    G = tiny_stylegan(fused_scale=True)
    table = tf_pickle.stylegan_table(5, TINY_STYLEGAN["mapping_layers"], [False, True, True, True])
    assert {own for rows in table.values() for _, own, _ in rows} == set(G.state_dict())
    for rule, shape in (
        ("dense", (5, 7)),
        ("conv", (3, 3, 4, 6)),
        ("pggan_fused", (3, 3, 4, 6)),
        ("pggan_dense", (6, 4 * 16)),
        ("same", (4,)),
    ):
        a = torch.randn(shape)
        assert torch.equal(tf_pickle._to_tf(rule, tf_pickle._to_torch(rule, a)), a), rule
    # The PGGAN dense layer: z @ W (TF) reshaped to (C, 4, 4) equals the stored 4x4 convolution on a 1x1 z.
    dense, z = torch.randn(6, 4 * 16), torch.randn(2, 6)
    conv = F.conv2d(z[:, :, None, None], tf_pickle._to_torch("pggan_dense", dense), padding=3)
    assert torch.allclose(conv, (z @ dense).reshape(2, 4, 4, 4), atol=1e-5)


def test_stored_truncation_coefficients_are_read(tmp_path):
    G = tiny_stylegan(seed=2, truncation_psi=1.0, truncation_cutoff=None)
    coefs = torch.ones(1, G.num_ws, 1)
    coefs[:, :5] = 0.6
    write_pth(G, tmp_path / "g.pth", extra={"truncation.truncation": coefs})
    assert load_generator(str(tmp_path / "g.pth")).options == {
        "truncation_psi": pytest.approx(0.6),
        "truncation_cutoff": 5,
    }
    assert truncation_from_coefficients(torch.ones(1, 8, 1), 8, "x") == (1.0, None)
    with pytest.raises(TlganError, match="not one psi"):
        truncation_from_coefficients(torch.tensor([0.5, 1.0, 0.5, 1.0]), 4, "x")


def test_bad_files_get_clear_errors(tmp_path):
    G = tiny_stylegan(seed=1)
    state = interfacegan_state(G)
    del state["synthesis.layer3.epilogue.style_mod.dense.wscale.bias"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(TlganError, match="layer3.epilogue.style_mod.dense.wscale.bias"):
        load_generator(str(tmp_path / "missing.pth"))
    state = interfacegan_state(G)
    state["synthesis.layer2.blur.kernel"] = torch.ones_like(state["synthesis.layer2.blur.kernel"])
    torch.save(state, tmp_path / "blur.pth")
    with pytest.raises(TlganError, match="blur filter"):
        load_generator(str(tmp_path / "blur.pth"))
    write_tf_pickle(tiny_pggan(), tmp_path / "cond.pkl", gs_kwargs={"label_size": 10})
    with pytest.raises(TlganError, match="conditional"):
        load_generator(str(tmp_path / "cond.pkl"))
    write_tf_pickle(tiny_pggan(), tmp_path / "ok.pkl")
    data = (tmp_path / "ok.pkl").read_bytes()
    (tmp_path / "cut.pkl").write_bytes(data[: len(data) // 2])
    with pytest.raises(TlganError, match="truncated or corrupt"):
        load_generator(str(tmp_path / "cut.pkl"))


# ---- docs/interfacegan.md, on a tiny StyleGAN ------------------------------------------------


def _invoke(*args):
    from click.testing import CliRunner

    from tlgan.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    assert result.exit_code == 0, result.output
    return result


def _unit(dim, seed):
    v = np.random.default_rng(seed).standard_normal((1, dim)).astype(np.float32)
    return v / np.linalg.norm(v)


CLASSIFIER_FILE = """
import torch
from tlgan.models import ModuleClassifier


class Readout(torch.nn.Module):
    # A fixed random linear read-out of the 8x8 image: scores that vary from face to face.
    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.randn(2, 3 * 8 * 8, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        x = torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return 3 * x @ self.w.t() / x.shape[1] ** 0.5


def make():
    return ModuleClassifier(Readout(), ["Smiling", "Young"], input_resolution=32)
"""


def test_the_interfacegan_page_commands_on_a_tiny_stylegan(tmp_path, one_thread):
    from tlgan.axes import FeatureAxes
    from tlgan.axes.interfacegan import import_boundaries
    from tlgan.editing.latent_file import load_latent
    from tlgan.evaluation.metrics import cosine_to_truth

    G = tiny_stylegan(seed=8)
    gen = tmp_path / "stylegan_ffhq.pth"
    write_pth(G, gen)
    bounds = tmp_path / "boundaries"
    bounds.mkdir()
    smile_w, age_w, age_c = (
        "stylegan_ffhq_smile_w_boundary.npy",
        "stylegan_ffhq_age_w_boundary.npy",
        "stylegan_ffhq_age_c_gender_boundary.npy",
    )
    planted = {smile_w: _unit(G.w_dim, 1), age_w: _unit(G.w_dim, 2), age_c: _unit(G.z_dim, 3)}
    for name, vector in planted.items():
        np.save(bounds / name, vector)
    _invoke(
        "import-boundaries",
        bounds / smile_w,
        bounds / age_w,
        "--generator",
        "stylegan_ffhq",
        "--out",
        tmp_path / "w.safetensors",
    )
    _invoke(
        "import-boundaries",
        bounds / age_c,
        "--generator",
        "stylegan_ffhq",
        "--out",
        tmp_path / "z.safetensors",
    )
    assert FeatureAxes.load(tmp_path / "z.safetensors").attributes == ["age_c_gender"]

    # Per layer in wp: only layers 0-3 move, by 3 along the boundary, after truncation.
    _invoke(
        "edit",
        "--generator",
        gen,
        "--axes",
        tmp_path / "w.safetensors",
        "--seed",
        7,
        "--attr",
        "smile=+3",
        "--layers",
        "0-3",
        "--out",
        tmp_path / "e.png",
        "--save-latent",
        tmp_path / "e.safetensors",
    )
    edited, meta = load_latent(tmp_path / "e.safetensors")
    start = G.sample_latents_at([7], seed=0, space="wp")[0]
    moved = torch.from_numpy(3 * planted[smile_w][0])
    assert meta["space"] == "wp"
    assert torch.allclose(edited[:4], start[:4] + moved, atol=1e-5) and torch.equal(edited[4:], start[4:])
    # In z, with a conditional boundary.
    _invoke(
        "edit",
        "--generator",
        gen,
        "--axes",
        tmp_path / "z.safetensors",
        "--seed",
        7,
        "--attr",
        "age_c_gender=-2",
        "--out",
        tmp_path / "z.png",
        "--save-latent",
        tmp_path / "z_latent.safetensors",
    )
    edited, meta = load_latent(tmp_path / "z_latent.safetensors")
    expected = G.sample_latents_at([7], seed=0)[0] - 2 * torch.from_numpy(planted[age_c][0])
    assert meta["space"] == "z" and torch.allclose(edited, expected, atol=1e-5)

    # tlgan's own axes in w, compared by cosine with the published ones renamed to the classifier's attributes.
    (tmp_path / "clf.py").write_text(CLASSIFIER_FILE)
    _invoke(
        "sample",
        "--generator",
        gen,
        "--classifier",
        f"{tmp_path / 'clf.py'}:make",
        "--space",
        "w",
        "-n",
        96,
        "--batch-size",
        48,
        "--out",
        tmp_path / "run",
    )
    _invoke("fit", tmp_path / "run", "--method", "glm", "--out", tmp_path / "ours.safetensors")
    ours = FeatureAxes.load(tmp_path / "ours.safetensors")
    assert ours.space == "w" and ours.dim == G.w_dim
    published = import_boundaries(
        [bounds / smile_w, bounds / age_w],
        attributes=["Smiling", "Young"],
        space="w",
        generator="stylegan_ffhq",
    )
    cosines = cosine_to_truth(ours, published)
    smile, fitted = torch.from_numpy(planted[smile_w][0]).double(), ours["Smiling"].double()
    assert set(cosines) == {"Smiling", "Young"}
    assert cosines["Smiling"] == pytest.approx(float(fitted @ smile / fitted.norm()))


def test_the_interfacegan_page_commands_on_a_tiny_pggan(tmp_path, one_thread):
    from tlgan.editing.latent_file import load_latent

    G = tiny_pggan(seed=9)
    write_tf_pickle(G, tmp_path / "karras2018iclr-celebahq-32x32.pkl")
    _invoke("convert", tmp_path / "karras2018iclr-celebahq-32x32.pkl", "--out", tmp_path / "pggan-celebahq")
    boundary = _unit(G.z_dim, 4)
    np.save(tmp_path / "pggan_celebahq_age_c_gender_boundary.npy", boundary)
    _invoke(
        "import-boundaries",
        tmp_path / "pggan_celebahq_age_c_gender_boundary.npy",
        "--generator",
        tmp_path / "pggan-celebahq",
        "--out",
        tmp_path / "axes.safetensors",
    )
    _invoke(
        "edit",
        "--generator",
        tmp_path / "pggan-celebahq",
        "--axes",
        tmp_path / "axes.safetensors",
        "--seed",
        7,
        "--attr",
        "age_c_gender=+3",
        "--out",
        tmp_path / "e.png",
        "--save-latent",
        tmp_path / "e.safetensors",
    )
    edited, _ = load_latent(tmp_path / "e.safetensors")
    start = G.sample_latents_at([7], seed=0)[0]
    assert start.norm().item() == pytest.approx(math.sqrt(G.z_dim), rel=1e-5)  # InterFaceGAN's sphere
    assert torch.allclose(edited, start + 3 * torch.from_numpy(boundary[0]), atol=1e-5)
    folder = load_generator(str(tmp_path / "pggan-celebahq"))
    assert torch.equal(folder.synthesize(edited[None]), G.synthesize(edited[None]))
