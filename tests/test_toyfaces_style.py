"""toyfaces-style: the seeded mapping network, the truth in z / w / wp, style mixing, layer ranges,
the finder comparison, and the CLI chain (sample in w, fit, edit --layers, invert W+)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tlgan.axes.finders import make_finder
from tlgan.cli import cli
from tlgan.errors import TlganError
from tlgan.models import load_classifier, load_generator
from tlgan.toyfaces import mapping, world
from tlgan.toyfaces.style import ATTRIBUTE_GROUPS, BASE_GROUP, FACTOR_GROUP, ToyfacesStyle, attribute_layers

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def G():
    return load_generator("toyfaces-style")


# --- the mapping network


def test_mapping_is_deterministic_and_documents_its_seeds():
    z = torch.randn(16, 512, generator=torch.Generator().manual_seed(3))
    a, b = mapping.MappingNetwork(), mapping.MappingNetwork()
    assert torch.equal(a(z), b(z))
    first = [w.copy() for w in mapping.mapping_weights64()]
    mapping.mapping_weights64.cache_clear()
    again = mapping.mapping_weights64()
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    # The weights are orthogonal up to the leaky-ReLU gain, as documented.
    q = again[0] / mapping.GAIN
    assert np.abs(q @ q.T - np.eye(512)).max() < 1e-10
    doc = mapping.__doc__
    assert mapping.MAPPING_SEED == 20_191_212 and "MAPPING_SEED = 20_191_212" in doc
    assert "CALIBRATION_SEED = 20_191_213" in doc
    # The stored output layer names its seeds.
    from safetensors import safe_open

    with safe_open(str(mapping.CALIBRATION_FILE), "np") as f:
        meta = f.metadata()
    assert meta["mapping_seed"] == str(mapping.MAPPING_SEED)
    assert meta["calibration_seed"] == str(mapping.CALIBRATION_SEED)


def test_stored_output_layer_whitens_fresh_samples(G):
    # A wrong or stale calibration file would leave w - w_avg off-centre or far from white.
    w = G.sample_latents(4096, seed=11, space="w").double()
    u = w - G.w_avg.double()
    assert u.mean(0).abs().max() < 0.1
    cov = torch.cov(u.T)
    # 4,096 samples in 512 dimensions spread the sample eigenvalues, so check the trace and the
    # variance along each attribute's direction rather than single eigenvalues.
    assert abs(torch.trace(cov) / 512 - 1.0) < 0.05
    d = world.true_directions().double()
    along = torch.einsum("ad,de,ae->a", d, cov, d)
    assert ((along > 0.75) & (along < 1.3)).all(), along
    freq = (G.latent_scores(w.float(), "w") > 0).float().mean(0)
    design = torch.tensor(list(world.frequencies().values()))
    assert (freq - design).abs().max() < 0.03


@pytest.mark.slow
def test_stored_output_layer_matches_recomputation():
    h_avg, readout = mapping.calibrate()
    w_avg, stored = mapping.stored_calibration()
    assert np.abs(w_avg - h_avg).max() < 1e-5 and np.abs(stored - readout).max() < 1e-4


# --- truth in w and z


def test_scores_are_affine_in_w_and_true_axes_recover_planted_labels(G):
    w = G.sample_latents(6000, seed=2, space="w")
    scores = G.latent_scores(w, "w")
    truth = G.true_axes(space="w")
    assert truth.space == "w" and truth.method == "truth"
    # Exactly affine: the scores are w . w_a + const.
    const = scores - w.double().sub(G.w_avg.double()).matmul(truth.vectors.double().T).float()
    assert (const - world.biases()).abs().max() < 1e-4
    # Labels from the world's attributes, fitted in w: the normals come back.
    labels_as_logits = torch.where(scores > 0, 4.0, -4.0)
    fitted = make_finder("logistic").fit(w, labels_as_logits, list(world.ATTRIBUTES))
    cos = (torch.as_tensor(fitted.axes_) * truth.vectors).sum(1)
    # Noiseless labels of rare attributes (8 %) on 6,000 samples; a random axis scores ~0.04, and
    # the raw w (without the output layer's whitening) is at ~0.78 from the truth.
    assert cos.min() > 0.88 and cos.mean() > 0.93, cos


def test_z_is_nonlinear_where_w_is_linear(G):
    n = 3000
    z = G.sample_latents(n, seed=5, space="z")
    w = G.map_latents(z, "z", "w").detach()
    scores = G.latent_scores(z, "z").double()

    def r2(x):
        design = torch.cat([x.double(), torch.ones(n, 1, dtype=torch.float64)], 1)
        coef = torch.linalg.lstsq(design, scores).solution
        return 1 - (scores - design @ coef).var(0) / scores.var(0)

    r2_w, r2_z = r2(w), r2(z)
    assert r2_w.min() > 0.9999
    # In-sample with 513 parameters the z fit is optimistic; still far from linear.
    assert r2_z.max() < 0.6, r2_z
    truth_z = G.true_axes(space="z")
    r2_best = truth_z.info["r2"].values()
    assert truth_z.method == "truth-average-gradient" and 0.15 < min(r2_best) and max(r2_best) < 0.5


def test_z_truth_is_the_average_gradient_of_the_true_scores(G):
    from tlgan.toyfaces import style

    truth = G.true_axes(space="z")
    stored = truth.vectors.double().numpy()

    def cosines(x):
        return (stored * x / np.linalg.norm(x, axis=1, keepdims=True)).sum(1)

    # A fresh autograd average over 512 other faces (its own noise allows about 0.977), and
    # Stein's form E[z s(z)] on 3,000 antithetic pairs without autograd (noisier: about 0.90).
    fresh, variances = style.average_gradients(n=512, seed=31)
    assert cosines(fresh).min() > 0.95
    assert cosines(style.stein_estimate(pairs=3000, seed=32)).min() > 0.8
    # R^2 of the best linear function of z = |E[grad s]|^2 / Var(s).
    r2 = np.array([truth.info["r2"][a] for a in truth.attributes])
    assert np.abs(r2 - (fresh**2).sum(1) / variances).max() < 0.08
    from safetensors import safe_open

    with safe_open(str(style.Z_TRUTH_FILE), "np") as f:
        assert f.metadata()["seed"] == str(style.Z_TRUTH_SEED) == "20191214"


def test_truncation_shrinks_scores_toward_the_biases(G):
    z = G.sample_latents(32, seed=9)
    base = G.latent_scores(z, "z") - world.biases()
    half = load_generator("toyfaces-style", truncation_psi=0.5)
    assert torch.allclose(half.latent_scores(z, "z") - world.biases(), 0.5 * base, atol=1e-4)
    coarse = load_generator("toyfaces-style", truncation_psi=0.0, truncation_cutoff=4)
    scores = coarse.latent_scores(z, "z")
    for j, a in enumerate(world.ATTRIBUTES):
        if ATTRIBUTE_GROUPS[a] == ("coarse",):
            assert torch.allclose(scores[:, j], world.biases()[j].expand(32), atol=1e-4)
        elif "coarse" not in ATTRIBUTE_GROUPS[a]:
            assert torch.allclose(scores[:, j], base[:, j] + world.biases()[j], atol=1e-4)
    # Beard = 0.85 e0 + 0.53 e5: with the coarse layers at the average only its own (middle) part is left.
    u = G.map_latents(z, "z", "w") - G.w_avg
    e5 = world.base_directions()[5]
    beard = world.ATTRIBUTES.index("Beard")
    own_part = torch.dot(world.true_directions()[beard], e5) * (u @ e5)
    assert torch.allclose(scores[:, beard], own_part + world.biases()[beard], atol=1e-4)


# --- wp: style mixing and layer ranges


def test_style_mixing_takes_coarse_from_a_and_the_rest_from_b(G):
    wp_a = G.map_latents(G.sample_latents(6, seed=1), "z", "wp")
    wp_b = G.map_latents(G.sample_latents(6, seed=2), "z", "wp")
    mixed = torch.cat([wp_a[:, :4], wp_b[:, 4:]], dim=1)
    f_mix, f_a, f_b = G.factors(mixed, "wp"), G.factors(wp_a, "wp"), G.factors(wp_b, "wp")
    # A's pose and head shape, B's colours and the rest of B's features.
    from_a = {"masculinity", "yaw", "scale", "shift_x", "shift_y", "bangs", "hat"}
    # Read from both: beard and mustache (A's masculinity, B's own part), baldness, lipstick.
    mixed_keys = {world.FACTOR_OF[a] for a, g in ATTRIBUTE_GROUPS.items() if "coarse" in g and len(g) > 1}
    assert mixed_keys == {"mustache", "beard_density", "baldness", "lipstick"}
    assert from_a | {"baldness"} == {k for k, g in FACTOR_GROUP.items() if g == "coarse"}
    for key in world.FACTOR_NAMES:
        if key in mixed_keys:
            continue
        want = f_a[key] if key in from_a else f_b[key]
        other = f_b[key] if key in from_a else f_a[key]
        assert torch.allclose(f_mix[key], want, atol=1e-6), key
        if key in ("yaw", "masculinity", "black_hair", "paleness", "smile", "light_angle"):
            assert not torch.allclose(f_mix[key], other, atol=1e-3), key
    # The beard's score is A's masculinity part plus B's own part, exactly.
    beard = world.ATTRIBUTES.index("Beard")
    d = world.true_directions()[beard].double()
    e0, e5 = world.base_directions()[0].double(), world.base_directions()[5].double()
    u_a, u_b = (wp_a[:, 0] - G.w_avg).double(), (wp_b[:, 0] - G.w_avg).double()
    want = torch.dot(d, e0) * (u_a @ e0) + torch.dot(d, e5) * (u_b @ e5) + world.biases()[beard]
    assert torch.allclose(G.latent_scores(mixed, "wp")[:, beard].double(), want, atol=1e-4)
    images = G.synthesize(mixed, "wp")
    assert (images - G.synthesize(wp_a, "wp")).abs().mean() > 0.01
    assert (images - G.synthesize(wp_b, "wp")).abs().mean() > 0.01


def test_every_base_is_read_from_the_group_that_draws_its_part():
    assert set(BASE_GROUP) == set(range(world.FIRST_UNUSED_BASE))
    for attribute, (bases, _) in world._DESIGN.items():
        group = FACTOR_GROUP[world.FACTOR_OF[attribute]]
        assert group in ATTRIBUTE_GROUPS[attribute]
        if len(bases) == 1:
            assert BASE_GROUP[next(iter(bases))] == group and ATTRIBUTE_GROUPS[attribute] == (group,)
    assert attribute_layers("Beard") == list(range(8)) and attribute_layers("Wearing_Lipstick") == [
        0,
        1,
        2,
        3,
        8,
        9,
    ]


@pytest.mark.parametrize(
    "attribute", ["Male", "Smiling", "Black_Hair", "Wearing_Hat", "Beard", "Wearing_Lipstick"]
)
def test_layer_range_edits_move_only_their_group(G, attribute):
    wp = G.map_latents(G.sample_latents(8, seed=4, space="w"), "w", "wp")
    axis = G.true_axes([attribute], space="w")[attribute]
    own = attribute_layers(attribute)
    mask = torch.zeros(G.num_ws, 1)
    mask[own] = 1.0
    before = G.factors(wp, "wp")
    after_own = G.factors(wp + 1.0 * mask * axis, "wp")
    after_other = G.factors(wp + 1.0 * (1 - mask) * axis, "wp")
    j = world.ATTRIBUTES.index(attribute)
    # Nothing outside the attribute's layers reads its direction: editing them changes no factor.
    for key in world.FACTOR_NAMES:
        assert torch.allclose(after_other[key], before[key], atol=1e-5), key
    # The attribute's own score moves by exactly the step on its layers, not at all elsewhere.
    shift = G.latent_scores(wp + mask * axis, "wp")[:, j] - G.latent_scores(wp, "wp")[:, j]
    assert torch.allclose(shift, torch.ones(8), atol=1e-4)
    assert not torch.allclose(after_own[world.FACTOR_OF[attribute]], before[world.FACTOR_OF[attribute]])


def test_layer_range_effects_with_the_classifier(G):
    from tlgan.evaluation.layer_ranges import layer_range_effects

    C = load_classifier("toyfaces-classifier")
    truth = G.true_axes(space="w")
    ranges = {a: attribute_layers(a) for a in ("Smiling", "Black_Hair")}
    result = layer_range_effects(G, C, truth, ranges, faces=6, step=1.5)
    for a in ranges:
        row = result["attributes"][a]
        assert row["effect_all"] > 1.0
        assert row["own_ratio"] >= 0.9 and row["other_ratio"] <= 0.1, row
    # The wrong range carries nothing: Smiling edited on the fine layers only.
    wrong = layer_range_effects(G, C, truth, {"Smiling": [8, 9]}, faces=6, step=1.5)["attributes"]["Smiling"]
    assert wrong["own_ratio"] < 0.1 and wrong["other_ratio"] > 0.9
    with pytest.raises(TlganError, match="within 0..9"):
        layer_range_effects(G, C, truth, {"Smiling": [12]}, faces=2)


def test_contract_methods(G):
    assert G.noise_maps() == {}
    assert G.latent_shape("wp") == (10, 512) and G.latent_shape("w") == (512,)
    wp = G.map_latents(G.sample_latents(2, seed=0), "z", "wp").clone().requires_grad_(True)
    images = G.synthesize_raw(wp)
    assert torch.equal(images.detach(), G.synthesize(wp.detach(), "wp"))
    images.square().mean().backward()
    assert wp.grad is not None and wp.grad.abs().sum() > 0
    with pytest.raises(TlganError, match="no noise maps"):
        G.synthesize_raw(wp.detach(), noise={"x": torch.zeros(1)})
    with pytest.raises(TlganError, match="did you mean 'Smiling'"):
        G.true_axes(["Smilin"], space="w")
    assert isinstance(G, ToyfacesStyle) and G.true_axes(space="wp").info["layers"]["Male"] == [0, 1, 2, 3]


# --- the finder comparison


def test_compare_finders_on_planted_scores(G):
    from tlgan.toyfaces.style_eval import compare_finders, linear_z_quality

    z = G.sample_latents(2000, seed=6)
    w = G.map_latents(z, "z", "w").detach()
    logits = 3.0 * G.latent_scores(z, "z")
    attrs = ["Male", "Smiling", "Eyeglasses"]
    cols = [world.ATTRIBUTES.index(a) for a in attrs]
    result = compare_finders({"z": z, "w": w}, logits[:, cols], attrs, G, methods=("glm",))
    assert result["w"]["glm"]["min"] > 0.995  # the glm clips large logits, so not exactly 1
    # In z the least-squares axis is the best linear one, but 2,000 samples of a non-linear score
    # estimate it worse than in w.
    assert result["z"]["glm"]["mean"] < result["w"]["glm"]["mean"] - 0.05
    quality = linear_z_quality(G, n=1200, seed=3)["attributes"]
    assert max(q["r2"] for q in quality.values()) < 0.7
    assert min(q["label_accuracy"] for q in quality.values()) > 0.6


# --- the CLI chain


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def test_cli_sample_fit_edit_invert_in_w_and_wp(tmp_path):
    run = tmp_path / "run"
    r = _invoke("sample", "--generator", "toyfaces-style", "--space", "w", "-n", 600, "--out", run, "--json")
    assert r.exit_code == 0, r.output
    axes = tmp_path / "axes.safetensors"
    r = _invoke("fit", run, "--method", "logistic", "--out", axes, "--json")
    assert r.exit_code == 0, r.output
    fitted = json.loads(r.output)
    assert fitted["space"] == "w"
    cos = {a: m["cosine_to_truth"] for a, m in fitted["axes"].items()}
    assert len(cos) == 17 and cos["Male"] > 0.5
    edited = tmp_path / "edited.safetensors"
    r = _invoke(
        "edit", "--generator", "toyfaces-style", "--axes", axes, "--seed", 2, "--attr", "Smiling=+2",
        "--layers", "4-7", "--out", tmp_path / "e.png", "--save-latent", edited,
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    from tlgan.editing.latent_file import load_latent

    latent, meta = load_latent(edited)
    assert meta["space"] == "wp" and tuple(latent.shape) == (10, 512)
    r = _invoke(
        "invert", tmp_path / "e.png", "--generator", "toyfaces-style", "--space", "wp", "--steps", 3,
        "--classifier", "none", "--encoder", "none", "--out", tmp_path / "inv", "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    found, meta = load_latent(tmp_path / "inv" / "e.safetensors")
    assert meta["space"] == "wp" and tuple(found.shape) == (10, 512)
    r = _invoke("toyfaces", "compare-finders", run, "--methods", "logistic", "--spaces", "w", "--json")
    assert r.exit_code == 0, r.output
    compared = json.loads(r.output)
    assert compared["w"]["logistic"]["cosine_to_truth"]["Male"] == pytest.approx(cos["Male"], abs=1e-4)


def test_default_finder_per_space():
    from tlgan.axes.finders import DEFAULT_METHOD, FINDERS, default_method

    # Measured on 20,000 samples with the bundled classifier (BENCHMARKS.md): glm in z (against the
    # average gradient), logistic in w (exact truth); wp edits use w axes.
    assert default_method("w") == default_method("wp") == "logistic"
    assert default_method("z") == DEFAULT_METHOD == "glm"
    assert all(default_method(s) in FINDERS for s in ("z", "w", "wp"))
    with pytest.raises(TlganError, match="no latent space 'x'"):
        default_method("x")


def test_cli_layer_ranges_with_conditional_axes():
    r = _invoke("toyfaces", "layer-ranges", "--faces", 8, "--attributes", "Male", "--lock-others", "--json")
    assert r.exit_code == 0, r.output
    male = json.loads(r.output)["attributes"]["Male"]
    # Projected off every attribute drawn by the middle and fine layers, Male's axis changes nothing
    # those layers draw: the other-layer edit leaves the image, and so the classifier, unchanged
    # (up to float32 rounding).
    assert male["layers"] == [0, 1, 2, 3] and male["effect_all"] > 0.5
    assert male["other_ratio"] < 1e-4 and male["own_ratio"] == pytest.approx(1.0, abs=1e-4)


def test_studio_edits_and_inverts_in_wp(G):
    pytest.importorskip("httpx")
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from tlgan.editing.edit import edit_latents
    from tlgan.studio.app import create_app, encode_png

    C = load_classifier("toyfaces-classifier")
    axes = G.true_axes(space="w")
    client = TestClient(create_app(G, C, axes, space="wp", invert_steps=25))
    reply = client.post("/api/render", json={"seed": 5, "amounts": {"Smiling": 2.0}})
    assert reply.status_code == 200, reply.text
    latent = torch.tensor(reply.json()["latent"]).reshape(G.num_ws, G.w_dim)
    base = G.sample_latents_at([5], seed=0, space="wp")[0]
    assert torch.allclose(latent, edit_latents(base, axes, {"Smiling": 2.0}, space="wp"), atol=1e-5)
    j = world.ATTRIBUTES.index("Smiling")
    shift = G.latent_scores(latent[None], "wp")[0, j] - G.latent_scores(base[None], "wp")[0, j]
    assert float(shift) == pytest.approx(2.0, abs=1e-3)
    # A W+ upload of a render: the search moves toward it from the average face.
    truth = G.sample_latents_at([77], seed=0, space="wp")
    with torch.inference_mode():
        target = G.synthesize(truth, "wp")
    photo = encode_png(target[0])
    reply = client.post("/api/invert", files={"file": ("me.png", photo, "image/png")})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["space"] == "wp" and len(result["latent"]) == G.num_ws * G.w_dim
    from tlgan.inversion.encoder import psnr_db

    with torch.inference_mode():
        start = float(psnr_db(G.synthesize(G.w_avg.expand(1, G.num_ws, G.w_dim), "wp"), target)[0])
    assert result["info"]["psnr_db"] > start + 1.0
    assert Image.open(io.BytesIO(photo)).size == (64, 64)


def test_the_anisotropic_variant_draws_the_same_faces_with_known_normals(G):
    A = load_generator("toyfaces-style-aniso")
    z = G.sample_latents(6, seed=8)
    assert A.name == "toyfaces-style-aniso"
    assert torch.allclose(A.synthesize(z), G.synthesize(z), atol=1e-4)
    w = A.map_latents(z, "z", "w")
    spread = torch.linalg.eigvalsh(torch.cov(A.sample_latents(2048, seed=1, space="w").T.double()))
    assert spread.max() / spread.min() > 100  # strongly anisotropic, unlike toyfaces-style's w
    truth = A.true_axes(space="w")
    # The true axis is the normal: a step along it moves its score equally on every face, and a
    # step orthogonal to all normals moves no score.
    moved = A.latent_scores(w + truth["Smiling"], "w") - A.latent_scores(w, "w")
    j = world.ATTRIBUTES.index("Smiling")
    assert torch.allclose(moved[:, j], moved[0, j].expand(6), atol=1e-4) and moved[0, j] > 1.0
    q, _ = torch.linalg.qr(truth.vectors.double().T, mode="complete")
    free = q[:, 17].float()
    assert (A.latent_scores(w + 3.0 * free, "w") - A.latent_scores(w, "w")).abs().max() < 1e-3
