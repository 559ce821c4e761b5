"""The toyfaces world: ground truth, renderer, analytic generator, CelebA-layout export, CLI."""

from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tlgan.errors import TlganError
from tlgan.imaging import make_grid, save_grid, save_image, to_uint8
from tlgan.toyfaces import world
from tlgan.toyfaces.export import export_celeba
from tlgan.toyfaces.generator import ToyfacesRenderer
from tlgan.toyfaces.render import render

A = list(world.ATTRIBUTES)


@pytest.fixture(scope="module")
def G():
    return ToyfacesRenderer()


@pytest.fixture(scope="module")
def many():
    """4000 latents and their labels (no rendering)."""
    z = torch.randn(4000, world.Z_DIM, generator=torch.Generator().manual_seed(11))
    return z, world.labels(z)


# ----------------------------------------------------------------------------------------
# The world: directions, scores, labels, correlations
# ----------------------------------------------------------------------------------------


def test_attribute_list_is_the_contract():
    assert A == [
        "Male",
        "Young",
        "Smiling",
        "Eyeglasses",
        "Mustache",
        "Beard",
        "Bald",
        "Bangs",
        "Black_Hair",
        "Blond_Hair",
        "Brown_Hair",
        "Gray_Hair",
        "Wearing_Lipstick",
        "Wearing_Hat",
        "Mouth_Slightly_Open",
        "Pale_Skin",
        "Big_Nose",
    ]
    assert set(world.FACTOR_OF) == set(A) and len(set(world.FACTOR_NAMES)) == len(A) + len(world.NUISANCES)


def test_basis_is_orthonormal_and_directions_are_its_documented_combinations():
    E = world.base_directions().double()
    assert torch.allclose(E @ E.T, torch.eye(world.Z_DIM, dtype=torch.float64), atol=1e-5)
    W = world.true_directions().double()
    assert W.shape == (17, 512)
    assert torch.allclose(W.norm(dim=1), torch.ones(17, dtype=torch.float64), atol=1e-6)
    # Closed forms from the design table: Beard = (0.85 e0 + 0.527 e5) / norm, Male = e0.
    beard = (0.85 * E[0] + 0.527 * E[5]) / math.hypot(0.85, 0.527)
    assert torch.allclose(W[A.index("Beard")], beard, atol=1e-6)
    assert torch.allclose(W[A.index("Male")], E[0], atol=1e-6)
    cos = W @ W.T
    assert cos[A.index("Beard"), A.index("Male")] == pytest.approx(0.85 / math.hypot(0.85, 0.527), abs=1e-5)
    assert cos[A.index("Black_Hair"), A.index("Blond_Hair")] == pytest.approx(-0.5, abs=1e-5)
    assert cos[A.index("Wearing_Lipstick"), A.index("Male")] < -0.8
    # Attributes that share no base direction are exactly orthogonal.
    assert abs(cos[A.index("Smiling"), A.index("Eyeglasses")]) < 1e-6
    # Nuisance and unused base directions are orthogonal to every attribute direction.
    assert (W @ E[16:].T).abs().max() < 1e-6


def test_scores_have_the_planted_value_and_labels_are_their_sign():
    W, b = world.true_directions(), world.biases()
    freq = world.frequencies()
    for j, name in enumerate(A):
        assert b[j].item() == pytest.approx(NormalDist().inv_cdf(freq[name]), abs=1e-6)
    # z = t * w_a plus a component orthogonal to w_a: s_a = t + b_a exactly.
    gen = torch.Generator().manual_seed(0)
    for j in (0, 5, 9, 16):
        noise = torch.randn(6, 512, generator=gen)
        noise -= (noise @ W[j])[:, None] * W[j]
        t = torch.linspace(-2, 2, 6)
        s = world.latent_scores(t[:, None] * W[j] + noise)
        assert torch.allclose(s[:, j], t + b[j], atol=1e-5)
    z = torch.randn(500, 512, generator=gen)
    assert torch.equal(world.labels(z), world.latent_scores(z) > 0)
    assert world.labels(z).dtype == torch.bool


def test_label_frequencies_follow_the_design(many):
    _, L = many
    freq = world.frequencies()
    for j, name in enumerate(A):
        p = freq[name]
        assert abs(L[:, j].float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / len(L)) + 1e-3, name
    assert 0.40 <= freq["Male"] <= 0.44 and 0.73 <= freq["Young"] <= 0.77
    others = [
        a for a in A if a not in ("Male", "Young", "Smiling", "Mouth_Slightly_Open", "Wearing_Lipstick")
    ]
    assert all(0.08 <= freq[a] <= 0.25 for a in others)


def test_correlations_show_in_the_labels(many):
    _, L = many
    col = {a: L[:, A.index(a)] for a in A}
    male, young = col["Male"], col["Young"]

    def p(event, given):
        return event[given].float().mean().item()

    assert p(col["Beard"], ~male) < 0.03 and p(col["Beard"], male) > 0.25
    assert p(col["Mustache"], ~male) < 0.05 and p(col["Mustache"], male) > 0.15
    assert p(col["Mustache"], col["Beard"]) > 5 * p(col["Mustache"], ~col["Beard"])
    assert p(~male, col["Wearing_Lipstick"]) > 0.85
    assert p(male & ~young, col["Bald"]) > 0.45 > 2 * (male & ~young).float().mean().item()
    assert p(col["Gray_Hair"], ~young) > 4 * p(col["Gray_Hair"], young)
    colours = torch.stack([col["Black_Hair"], col["Blond_Hair"], col["Brown_Hair"]], 1).sum(1)
    assert (colours >= 2).float().mean() < 0.04  # rare co-occurrence by design
    # Independent attributes stay independent.
    assert abs(p(col["Smiling"], col["Eyeglasses"]) - col["Smiling"].float().mean().item()) < 0.06


def test_factors_are_monotone_in_their_scores_and_nuisances_ignore_attributes():
    W = world.true_directions()
    z0 = torch.randn(1, 512, generator=torch.Generator().manual_seed(4))
    t = torch.linspace(-0.55, 0.55, 12)  # steep but not saturated in float32
    for j, name in enumerate(A):
        s0 = world.latent_scores(z0)[0, j]
        z = z0 + (t - s0)[:, None] * W[j]
        values = world.factors(z)[world.FACTOR_OF[name]]
        steps = values[1:] - values[:-1]
        assert (steps < 0).all() if name == "Young" else (steps > 0).all(), name
        assert torch.equal(world.labels(z)[:, j], t > 0), name
    # Moving along nuisance directions changes nuisances only; unused directions change nothing.
    E = world.base_directions()
    f0 = world.factors(z0)
    for k, direction in ((16, "yaw"), (22, "scale"), (23, "shift_x")):
        f1 = world.factors(z0 + 0.7 * E[k])
        assert not torch.allclose(f1[direction], f0[direction])
        assert torch.equal(world.labels(z0 + 0.7 * E[k]), world.labels(z0))
        for name in A:
            key = world.FACTOR_OF[name]
            assert torch.allclose(f1[key], f0[key], atol=1e-6), (direction, key)
    f2 = world.factors(z0 + 3.0 * E[100] - 2.0 * E[511])
    assert all(torch.allclose(f2[k], f0[k], atol=1e-5) for k in f0)


# ----------------------------------------------------------------------------------------
# The renderer and the generator
# ----------------------------------------------------------------------------------------


def test_faces_are_deterministic_across_calls_and_batch_sizes(G):
    z = G.sample_latents(12, seed=3)
    whole = G.synthesize(z)
    assert whole.shape == (12, 3, 64, 64) and whole.dtype == torch.float32
    pieces = torch.cat([G.synthesize(z[:1]), G.synthesize(z[1:6]), G.synthesize(z[6:])])
    # Factors are computed in float64, so they match exactly; pixels agree far below 1/255
    # (vectorised and scalar float32 kernels may differ in the last bit).
    torch.testing.assert_close(pieces, whole, atol=1e-5, rtol=0)
    later = G.synthesize(G.sample_latents(4, seed=3, start=8))  # same faces, sampled from index 8
    torch.testing.assert_close(later, whole[8:], atol=1e-5, rtol=0)
    assert torch.equal(G.synthesize(z), whole)
    assert not torch.allclose(G.synthesize(G.sample_latents(1, seed=4)), whole[:1])
    # Chunking (and the worker threads that draw chunks) changes nothing either, and torch's
    # thread setting is restored afterwards.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        f = world.factors(z)
        torch.testing.assert_close(render(f, chunk_size=5), render(f, chunk_size=64), atol=1e-5, rtol=0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_images_are_in_range_and_carry_the_background_hue(G):
    z = G.sample_latents(64, seed=9)
    x = G.synthesize(z)
    assert torch.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0
    assert x.std() > 0.3  # real pictures, not a flat colour
    # The top-left corner is background: hue/brightness from the nuisance factors, light
    # gradient at most +-12%.
    f = world.factors(z)
    corner = (x[:, :, 1, 1] + 1) / 2
    assert torch.allclose(corner.max(1).values, f["background_brightness"], rtol=0.25)


def test_moving_along_each_true_axis_flips_its_label_and_changes_the_image(G):
    W = world.true_directions()
    z0 = G.sample_latents(1, seed=21)
    s0 = world.latent_scores(z0)[0]
    lows, highs = [], []
    for j in range(17):
        lows.append(z0 + (-1.5 - s0[j]) * W[j])
        highs.append(z0 + (1.5 - s0[j]) * W[j])
    lo, hi = torch.cat(lows), torch.cat(highs)
    assert not world.labels(lo).diagonal().any() and world.labels(hi).diagonal().all()
    # Count the pixels that change clearly (by more than 10% of the range in some channel):
    # the smallest cues (nose, smile, mouth) still move dozens of pixels.
    changed = ((G.synthesize(hi) - G.synthesize(lo)).abs().amax(dim=1) > 0.2).sum(dim=(1, 2))
    for j, name in enumerate(A):
        assert changed[j] >= 25, (name, int(changed[j]))
    # A direction no factor uses changes nothing.
    E = world.base_directions()
    torch.testing.assert_close(G.synthesize(z0 + 2.0 * E[300]), G.synthesize(z0), atol=1e-5, rtol=0)


def test_cues_land_where_they_should(G):
    """A few planted cues, checked on the pixels: glasses are dark at the eyes, lipstick is
    red at the mouth, pale skin is light on the cheek."""
    W = world.true_directions()
    z0 = torch.zeros(1, 512)  # centred face: no shift, scale 1, yaw 0

    def at(name, value):
        j = A.index(name)
        return z0 + (value - world.latent_scores(z0)[0, j]) * W[j]

    def pixel(x, row, col):
        return (x[0, :, row, col] + 1) / 2

    off, on = G.synthesize(at("Eyeglasses", -2)), G.synthesize(at("Eyeglasses", 2))
    # Outer rim of the left lens: canonical x = -0.2 - 0.128, y = 0 -> pixel (32, 21).
    assert pixel(on, 32, 21).max() < 0.3 < pixel(off, 32, 21).max()
    off, on = G.synthesize(at("Wearing_Lipstick", -2)), G.synthesize(at("Wearing_Lipstick", 2))
    r, g = pixel(on, 45, 32)[0], pixel(on, 45, 32)[1]
    assert r > 0.6 and g < 0.2 and pixel(off, 45, 32)[1] > 0.25
    off, on = G.synthesize(at("Pale_Skin", -2)), G.synthesize(at("Pale_Skin", 2))
    assert pixel(on, 38, 22).mean() > pixel(off, 38, 22).mean() + 0.08


def test_renderer_is_differentiable_in_the_latent(G):
    z = G.sample_latents(2, seed=5).requires_grad_(True)
    G.synthesize(z).mean().backward()
    grad = z.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Several chunks, drawn by worker threads, still carry gradients (and no_grad is honoured).
    f = {k: v.detach().repeat(3).requires_grad_(True) for k, v in world.factors(z.detach()).items()}
    render(f, chunk_size=2).sum().backward()
    assert f["smile"].grad is not None and f["smile"].grad.abs().sum() > 0
    with torch.no_grad():
        assert not render(f, chunk_size=2).requires_grad
    # Only attribute and nuisance directions matter: the gradient lives in their span.
    E = world.base_directions()
    unused = grad @ E[world.FIRST_UNUSED_BASE :].T
    assert unused.abs().max() < 1e-5 * max(1.0, float(grad.abs().max()))


def test_render_refuses_incomplete_factors():
    f = world.factors(torch.zeros(2, 512))
    del f["beard_density"]
    with pytest.raises(TlganError, match="beard_density"):
        render(f)
    f = world.factors(torch.zeros(2, 512))
    f["yaw"] = torch.zeros(3)
    with pytest.raises(TlganError, match="yaw"):
        render(f)
    with pytest.raises(TlganError, match=r"\(N, 512\)"):
        world.labels(torch.zeros(2, 10))


def test_generator_is_registered_and_knows_its_true_axes():
    from tlgan.axes.feature_axes import FeatureAxes
    from tlgan.models import load_generator

    G = load_generator("toyfaces-render")
    assert isinstance(G, ToyfacesRenderer) and G.name == "toyfaces-render"
    assert (G.z_dim, G.img_resolution) == (512, 64)
    axes = G.true_axes()
    assert isinstance(axes, FeatureAxes) and axes.method == "truth" and axes.attributes == A
    assert torch.equal(axes.vectors, world.true_directions())
    sub = G.true_axes(["Beard", "Male"])
    assert torch.equal(sub["Beard"], world.true_directions()[A.index("Beard")])
    with pytest.raises(TlganError, match="Beards"):
        G.true_axes(["Beards"])
    z = G.sample_latents(3, seed=1)
    assert torch.equal(G.labels(z), world.labels(z))
    assert torch.equal(G.factors(z)["age"], world.factors(z)["age"])


# ----------------------------------------------------------------------------------------
# Export in CelebA's layout
# ----------------------------------------------------------------------------------------


def _parse_celeba(root: Path):
    """A deliberately tiny, independent parser of CelebA's two list files."""
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    count, names = int(lines[0]), lines[1].split()
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == count
    files = [r[0] for r in rows]
    values = np.array([[int(v) for v in r[1:]] for r in rows])
    partition = dict(line.split() for line in (root / "list_eval_partition.txt").read_text().splitlines())
    return names, files, values, partition


def test_export_round_trip(tmp_path, G):
    out = tmp_path / "celeba"
    result = export_celeba(out, 20, seed=7, batch_size=8, progress=False)
    assert (result.n, result.rendered, result.reused) == (20, 20, 0)
    names, files, values, partition = _parse_celeba(out)
    assert names == A
    assert files == [f"{i:06d}.png" for i in range(1, 21)]
    assert set(np.unique(values)) <= {-1, 1}
    z = G.sample_latents(20, seed=7)
    assert np.array_equal(values == 1, world.labels(z).numpy())
    assert [partition[f] for f in files] == ["0"] * 16 + ["1"] * 2 + ["2"] * 2
    # CelebA's own spacing: values right-aligned in two columns.
    line = (out / "list_attr_celeba.txt").read_text().splitlines()[2]
    assert line.startswith("000001.png ") and len(line) == len("000001.png") + 17 * 3
    # The PNG is face i of the seed.
    png = np.asarray(Image.open(out / "img_align_celeba" / "000004.png"))
    assert png.shape == (64, 64, 3)
    expected = to_uint8(G.synthesize(z[3:4]))[0]
    assert np.abs(png.astype(int) - expected.astype(int)).max() <= 1
    import json

    meta = json.loads((out / "toyfaces.json").read_text())
    assert meta["seed"] == 7 and meta["n"] == 20 and meta["complete"] is True
    assert meta["factors"]["attributes"]["Young"] == "age" and "yaw" in meta["factors"]["nuisances"]

    # Resume: only missing images are drawn again; the lists grow with n.
    (out / "img_align_celeba" / "000005.png").unlink()
    again = export_celeba(out, 24, seed=7, batch_size=8, progress=False)
    assert (again.rendered, again.reused) == (5, 19)
    redrawn = np.asarray(Image.open(out / "img_align_celeba" / "000005.png")).astype(int)
    assert np.abs(redrawn - to_uint8(G.synthesize(z[4:5]))[0].astype(int)).max() <= 1
    _, files, values, _ = _parse_celeba(out)
    assert len(files) == 24
    assert np.array_equal(values == 1, world.labels(G.sample_latents(24, seed=7)).numpy())
    with pytest.raises(TlganError, match="seed 7"):
        export_celeba(out, 24, seed=8, progress=False)
    with pytest.raises(TlganError, match="sum to 1"):
        export_celeba(tmp_path / "other", 10, partition=(0.5, 0.1, 0.1), progress=False)


# ----------------------------------------------------------------------------------------
# Images and the CLI
# ----------------------------------------------------------------------------------------


def test_to_uint8_and_grids(tmp_path):
    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0, 3.0]).view(1, 1, 1, 6).expand(2, 3, 1, 6)
    u = to_uint8(x)
    assert u.shape == (2, 1, 6, 3) and u.dtype == np.uint8
    assert u[0, 0, :, 0].tolist() == [0, 64, 128, 191, 255, 255]  # round((v + 1) * 127.5), clipped
    images = torch.rand(5, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    grid = make_grid(images, nrow=3)
    assert grid.shape == (8, 12, 3)
    assert np.array_equal(grid[4:8, 0:4], to_uint8(images[3])) and not grid[4:8, 8:12].any()
    path = save_grid(images, tmp_path / "g.png", nrow=3, upscale=2)
    back = np.asarray(Image.open(path))
    assert back.shape == (16, 24, 3) and np.array_equal(back[::2, ::2], grid)
    save_image(images[1], tmp_path / "one.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "one.png")), to_uint8(images[1]))
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind
    with pytest.raises(TlganError, match="shape"):
        to_uint8(torch.zeros(2, 5, 4, 4))


def test_cli_export_and_grid(tmp_path):
    from tlgan.cli.toyfaces import toyfaces

    runner = CliRunner()
    res = runner.invoke(toyfaces, ["export", "--out", str(tmp_path / "data"), "-n", "6", "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "data" / "img_align_celeba").glob("*.png"))) == 6
    names, files, values, _ = _parse_celeba(tmp_path / "data")
    assert np.array_equal(values == 1, world.labels(ToyfacesRenderer().sample_latents(6, seed=3)).numpy())
    res = runner.invoke(
        toyfaces, ["grid", "--seeds", "0-3,7", "--out", str(tmp_path / "faces.png"), "--nrow", "3"]
    )
    assert res.exit_code == 0, res.output
    grid = np.asarray(Image.open(tmp_path / "faces.png"))
    assert grid.shape == (128, 192, 3)
    G = ToyfacesRenderer()
    face7 = to_uint8(G.synthesize(G.sample_latents(1, seed=7)))[0]
    assert np.abs(grid[64:, 64:128].astype(int) - face7.astype(int)).max() <= 1
