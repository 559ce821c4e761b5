"""The evaluation measurements against planted answers and closed forms."""

import math

import pytest
import torch

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.evaluation import metrics as M
from tlgan.models.base import Classifier, Generator

torch.set_num_threads(1)


# --------------------------------------------------------------------------- a world where everything is known
SIDE = 2
DIM = 3 * SIDE * SIDE  # 12: the "image" is the latent itself, laid out as 3x2x2 pixels
PIXEL_SCALE = 0.125
GAIN = 4.0  # classifier logit = GAIN * (w_a . z + b_a)


def planted(names, rows):
    vectors = torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float32), dim=1)
    return FeatureAxes(vectors, names, generator="pixel-world", method="truth")


def e(*coefs):
    row = [0.0] * DIM
    for k, c in enumerate(coefs):
        row[k] = c
    return row


class PixelGenerator(Generator):
    """z -> image whose pixels are z / 8: every latent coordinate survives the trip exactly."""

    name = "pixel-world"
    z_dim = DIM
    img_resolution = SIDE

    def _synthesize(self, latents, space):
        return (latents * PIXEL_SCALE).reshape(-1, 3, SIDE, SIDE)


class ProjectionClassifier(Classifier):
    """Reads z back from the pixels and returns GAIN * (W z + b): logits linear in z."""

    input_resolution = SIDE

    def __init__(self, axes: FeatureAxes, bias):
        super().__init__()
        self.attributes = tuple(axes.attributes)
        self.register_buffer("weight", axes.vectors.clone())
        self.register_buffer("bias", torch.tensor(bias, dtype=torch.float32))

    def _logits(self, images):
        z = images.reshape(len(images), -1) / PIXEL_SCALE
        return GAIN * (z @ self.weight.T + self.bias)


@pytest.fixture
def beard_world():
    """Male = e0, Beard leans on Male (cos 0.85), Smiling orthogonal to both."""
    axes = planted(["Male", "Beard", "Smiling"], [e(1), e(0.85, 0.527), e(0, 0, 1)])
    return PixelGenerator().eval(), ProjectionClassifier(axes, [0.0, -0.5, 0.0]).eval(), axes


def closed_form_change(axes, bias, latents, direction, step, attribute):
    """Mean over faces of sigmoid(GAIN (w.(z + s u) + b)) - sigmoid(GAIN (w.z + b)) for one attribute."""
    k = axes.index(attribute)
    w = axes.vectors[k].double()
    z = latents.double()
    before = torch.sigmoid(GAIN * (z @ w + bias[k]))
    after = torch.sigmoid(GAIN * ((z + step * direction.double()) @ w + bias[k]))
    return float((after - before).mean())


# --------------------------------------------------------------------------- correlations
def test_label_correlation_matches_phi_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5000, generator=g) < 0.4
    noise = torch.rand(5000, generator=g) < 0.2
    b = a ^ noise  # b agrees with a except on 20% of rows
    labels = torch.stack([a, b, ~a, torch.zeros_like(a)], dim=1)
    corr = M.label_correlation(labels)
    n11 = float((a & b).sum())
    n00 = float((~a & ~b).sum())
    n10 = float((a & ~b).sum())
    n01 = float((~a & b).sum())
    phi = (n11 * n00 - n10 * n01) / math.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
    assert corr[0, 1] == pytest.approx(phi, abs=1e-5)
    assert corr[0, 2] == pytest.approx(-1.0, abs=1e-6) and corr[0, 0] == pytest.approx(1.0, abs=1e-6)
    # a constant column has no correlation with anything
    assert torch.isnan(corr[3]).all() and torch.isnan(corr[:, 3]).all()


def test_compare_correlations_matches_on_shared_attributes():
    g = torch.Generator().manual_seed(1)
    male = torch.rand(4000, generator=g) < 0.5
    beard = male & (torch.rand(4000, generator=g) < 0.5)
    smile = torch.rand(4000, generator=g) < 0.5
    generated = torch.stack([male, beard, smile], dim=1)
    # the data set has its columns in another order, one extra attribute, and beards independent of sex
    d_male = torch.rand(3000, generator=g) < 0.5
    d_beard = torch.rand(3000, generator=g) < 0.3
    d_extra = torch.rand(3000, generator=g) < 0.5
    d_smile = d_male.clone()
    data = torch.stack([d_extra, d_smile, d_beard, d_male], dim=1)
    out = M.compare_correlations(
        generated, ["Male", "Beard", "Smiling"], data, ["Eyeglasses", "Smiling", "Beard", "Male"]
    )
    assert out["common_attributes"] == ["Male", "Beard", "Smiling"]
    gen = M.label_correlation(generated).double()
    dat = M.label_correlation(torch.stack([d_male, d_beard, d_smile], dim=1)).double()
    assert torch.allclose(torch.tensor(out["data"], dtype=torch.float64), dat, atol=1e-6)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(abs(float(gen[i, j] - dat[i, j])) for i, j in pairs) / len(pairs)
    assert out["mean_abs_difference"] == pytest.approx(expected, abs=1e-5)
    assert out["data_frequency"]["Male"] == pytest.approx(float(d_male.float().mean()))
    with pytest.raises(TlganError, match="shares 1 attribute"):
        M.compare_correlations(generated, ["Male", "Beard", "Smiling"], data[:, :1], ["Male"])


# --------------------------------------------------------------------------- geometry
def test_axis_geometry_before_and_after_locking():
    axes = planted(
        ["Male", "Beard", "Lipstick", "Smiling"], [e(1), e(0.85, 0.527), e(-0.85, 0, 0.527), e(0.3, 0, 0, 1)]
    )
    geo = M.axis_geometry(axes, locks=["Male"])
    before = torch.tensor(geo["before"])
    assert torch.allclose(before, axes.vectors @ axes.vectors.T, atol=1e-5)
    after = torch.tensor(geo["after"])
    # every other axis is orthogonal to the locked one after disentangling ...
    assert after[0, 1:].abs().max() < 1e-5
    # ... and Beard/Lipstick, which only shared Male, become orthogonal to each other too
    assert before[1, 2] < -0.5 and abs(after[1, 2]) < 1e-5
    assert geo["max_abs_cos_to_locks"]["Beard"]["before"] == pytest.approx(0.85, abs=2e-3)
    assert geo["max_abs_cos_to_locks"]["Beard"]["after"] < 1e-5
    assert "Male" not in geo["max_abs_cos_to_locks"]  # no other locked axis to compare with


# --------------------------------------------------------------------------- separability
def test_separability_high_for_planted_attribute_chance_for_noise():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6000, 16, generator=g)
    w = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    planted_scores = 3.0 * z @ w + 0.3 * torch.randn(6000, generator=g)
    noise_scores = torch.randn(6000, generator=g)  # independent of z: nothing to find
    out = M.separability(z, torch.stack([planted_scores, noise_scores], 1), ["Real", "Noise"], ratio=0.05)
    assert out["Real"]["val_accuracy"] > 0.97
    # the middle samples sit near the boundary, so they are harder than the extremes but far above chance
    assert 0.75 < out["Real"]["remaining_accuracy"] <= out["Real"]["val_accuracy"] + 1e-9
    assert out["Noise"]["remaining_accuracy"] < 0.6
    assert out["Real"]["n_train"] > 0


# --------------------------------------------------------------------------- edit effect
def test_edit_effect_orthogonal_axis_leaves_others_alone(beard_world):
    G, F, axes = beard_world
    z = G.sample_latents(64, seed=3)
    out = M.edit_effect(G, F, axes, z, steps=(-2.0, 2.0))
    smile = out["unlocked"]["Smiling"]
    bias = F.bias.double()
    for s, step in enumerate((-2.0, 2.0)):
        change = dict(zip(out["attributes"], smile["change"][s], strict=True))
        assert abs(change["Male"]) < 1e-6 and abs(change["Beard"]) < 1e-6
        assert change["Smiling"] == pytest.approx(
            closed_form_change(axes, bias, z, axes["Smiling"], step, "Smiling"), abs=1e-5
        )
        assert abs(change["Smiling"]) > 0.2
    assert smile["ratio"] < 1e-4
    assert out["entanglement"]["Smiling"]["ratio"] < 1e-4


def test_edit_effect_locking_cuts_correlated_side_effect(beard_world):
    G, F, axes = beard_world
    z = G.sample_latents(64, seed=4)
    bias = F.bias.double()
    out = M.edit_effect(G, F, axes, z, steps=(-2.0, 2.0), locks=["Male"], lock_demo=("Beard", "Male"))
    free, locked = out["unlocked"]["Beard"], out["locked"]["Beard"]
    # raw Beard axis: Male moves by the closed form of moving along the raw axis
    male_free = dict(zip(out["attributes"], free["change"][0], strict=True))["Male"]
    assert male_free == pytest.approx(
        closed_form_change(axes, bias, z, axes["Beard"], -2.0, "Male"), abs=1e-5
    )
    assert male_free < -0.2
    assert free["largest_off_target_attribute"][0] == "Male"
    # locked: the Beard direction is orthogonal to Male, so P(Male) does not move
    male_locked = dict(zip(out["attributes"], locked["change"][0], strict=True))["Male"]
    assert abs(male_locked) < 1e-5
    assert out["entanglement"]["Beard"]["ratio"] > 0.5
    assert out["entanglement"]["Beard"]["ratio_locked"] < 1e-3
    # a locked axis is not edited in the locked variant
    assert "Male" not in out["locked"] and out["entanglement"]["Male"]["ratio_locked"] is None
    beard = out["male_change_beard_minus"]
    assert beard["step"] == -2.0
    assert beard["unlocked"] == pytest.approx(male_free, abs=1e-6)
    assert abs(beard["locked"]) < 1e-5 and beard["at_least_halved"] and beard["reduction"] > 0.99
    assert beard["beard_change_locked"] < 0  # the beard itself still goes away


def test_edit_effect_without_locks_reuses_unlocked_and_validates(beard_world):
    G, F, axes = beard_world
    z = G.sample_latents(8, seed=5)
    out = M.edit_effect(G, F, axes, z, steps=(1.0,))
    assert out["locked"] == {}
    assert all(v["ratio_locked"] == v["ratio"] for v in out["entanglement"].values())
    with pytest.raises(TlganError, match="did you mean 'Male'"):
        M.edit_effect(G, F, axes, z, locks=["male"])
    with pytest.raises(TlganError, match="at least one step"):
        M.edit_effect(G, F, axes, z, steps=())
    with pytest.raises(TlganError, match="size 12"):
        M.edit_effect(G, F, axes, torch.zeros(4, 5))


# --------------------------------------------------------------------------- ground truth
def test_cosine_to_truth_and_curve_sizes():
    truth = planted(["A", "B"], [e(1), e(0, 1)])
    fitted = FeatureAxes(torch.tensor([e(1, 1), e(0, -1)]), ["B", "A"])
    cos = M.cosine_to_truth(fitted, truth)
    assert cos["B"] == pytest.approx(1 / math.sqrt(2), abs=1e-6) and cos["A"] == pytest.approx(0.0, abs=1e-7)
    assert M.curve_sizes(6000) == [1000, 5000, 6000]
    assert M.curve_sizes(200_000) == [1000, 5000, 20000, 100000]
    assert M.curve_sizes(500) == [500]


def test_learning_curve_recovers_truth_and_improves_with_samples():
    g = torch.Generator().manual_seed(6)
    d = 32
    truth = FeatureAxes(torch.nn.functional.normalize(torch.randn(3, d, generator=g), dim=1), ["A", "B", "C"])
    z = torch.randn(8000, d, generator=g)
    scores = 2.0 * z @ truth.vectors.T + 1.0 * torch.randn(8000, 3, generator=g)
    curve = M.learning_curve(
        z, scores, truth.attributes, truth, methods=("glm", "logistic"), sizes=(300, 2000, 8000)
    )
    assert curve["sizes"] == [300, 2000, 8000]
    for method in ("glm", "logistic"):
        mean = curve["methods"][method]["mean"]
        assert mean[-1] > 0.98, (method, mean)
        assert mean[0] < mean[-1]  # more samples, closer to the truth
        assert curve["methods"][method]["min"][-1] <= mean[-1]
    # reusing full-size fits gives the same numbers as refitting
    from tlgan.axes.finders import make_finder

    full = make_finder("glm").fit(z, scores, truth.attributes).to_feature_axes(truth.attributes)
    reused = M.learning_curve(
        z, scores, truth.attributes, truth, methods=("glm",), sizes=(8000,), fitted={"glm": full}
    )
    assert reused["methods"]["glm"]["mean"][0] == pytest.approx(curve["methods"]["glm"]["mean"][-1], abs=1e-5)


# --------------------------------------------------------------------------- method comparison
def test_compare_methods_pairs_and_truth():
    truth = planted(["A", "B"], [e(1), e(0, 1)])
    a1 = FeatureAxes(truth.vectors.clone(), ["A", "B"], method="glm", metrics={"A": {"accuracy": 0.9}})
    a2 = FeatureAxes(
        torch.nn.functional.normalize(torch.tensor([e(1, 1), e(0, 1)]), dim=1), ["A", "B"], method="svm"
    )
    out = M.compare_methods(
        {"glm": a1, "svm": a2}, {"glm": {"A": {"ratio": 0.1}, "B": {"ratio": 0.2}}}, truth
    )
    assert out["cosine"]["glm~svm"]["A"] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert out["cosine"]["glm~svm"]["B"] == pytest.approx(1.0, abs=1e-6)
    assert out["mean_cosine"]["glm~svm"] == pytest.approx((1 / math.sqrt(2) + 1) / 2, abs=1e-6)
    assert out["metrics"]["glm"]["A"] == {"accuracy": 0.9}
    assert out["entanglement"] == {"glm": {"A": 0.1, "B": 0.2}}
    assert out["cosine_to_truth"]["glm"] == {"A": pytest.approx(1.0), "B": pytest.approx(1.0)}


def test_general_evaluation_code_names_no_toy_attribute():
    """The toy world's attributes (e.g. the Beard/Male demonstration) are chosen by callers, never
    written into the evaluation code: no string in it, docstrings aside, is a toyfaces attribute."""
    import ast
    from pathlib import Path

    import tlgan.evaluation
    from tlgan.toyfaces.world import ATTRIBUTES

    found = []
    for path in sorted(Path(tlgan.evaluation.__file__).parent.glob("*.py")):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found += [f"{path.name}: {name}" for name in ATTRIBUTES if name in node.value]
    assert found == []
