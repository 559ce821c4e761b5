"""Axis finders, disentangling and InterFaceGAN boundary files, against planted answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tlgan.axes import FeatureAxes
from tlgan.axes.disentangle import cosine_matrix, disentangle, project_out
from tlgan.axes.finders import (
    FINDERS,
    GLMFinder,
    LogisticFinder,
    NotFittedError,
    SVMFinder,
    fit_linear_svm,
    make_finder,
    top_bottom_split,
)
from tlgan.axes.interfacegan import export_boundaries, import_boundaries
from tlgan.errors import TlganError
from tlgan.models.base import ModuleGenerator

NAMES = ["Smiling", "Male", "Young"]


def planted(n=6000, d=12, a=3, scale=3.0, noise=0.5, seed=0, offset=0.0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(n, d, generator=g) + offset
    truth = torch.nn.functional.normalize(torch.randn(a, d, generator=g), dim=1)
    logits = scale * ((latents - offset) @ truth.T) + noise * torch.randn(n, a, generator=g)
    return latents, logits, truth


def _vec(u):
    return (
        u.detach().double() if isinstance(u, torch.Tensor) else torch.from_numpy(np.array(u, np.float64))
    ).flatten()


def cos(u, v):
    u, v = _vec(u), _vec(v)
    return float(u @ v / (u.norm() * v.norm()))


# --------------------------------------------------------------------------- finders
# The contract tests run over every registered finder (a new one is tested as it registers).
# Supervised finders fit attribute scores; the unsupervised ones (``uses_generator``: pca, sefa)
# ignore scores and names and may read the generator, so the score contracts do not apply to them.
RECOVERY_SETTINGS = {"svm": (20000, {"ratio": 0.1})}  # (samples, options); others: 8000 samples, defaults


def _unsupervised(name: str) -> bool:
    return make_finder(name).uses_generator


def _linear_generator(dim: int) -> ModuleGenerator:
    """A generator whose first layer takes the latent: enough for the unsupervised finders' fit."""
    torch.manual_seed(0)
    return ModuleGenerator(
        torch.nn.Sequential(torch.nn.Linear(dim, 48), torch.nn.Unflatten(1, (3, 4, 4))), dim
    )


@pytest.mark.parametrize("name", FINDERS.names())
def test_finders_recover_planted_directions(name):
    if _unsupervised(name):
        pytest.skip(
            f"{name} is unsupervised: it finds directions of latent variance or of the generator's "
            f"weights, not the attribute directions planted in the scores (test_unsupervised.py "
            f"checks its own planted answers)"
        )
    n, kwargs = RECOVERY_SETTINGS.get(name, (8000, {}))
    latents, logits, truth = planted(n=n)
    finder = make_finder(name, **kwargs).fit(latents, logits, NAMES)
    assert finder.axes_.shape == truth.shape
    for i in range(len(NAMES)):
        assert cos(finder.axes_[i], truth[i]) > 0.99, (name, i)
        assert abs(float(finder.axes_[i].norm()) - 1.0) < 1e-5
    # The decision function and the unit-axis form describe the same hyperplane.
    distances = latents[:50] @ finder.axes_.T + finder.intercepts_
    norms = finder.coef_.norm(dim=1)
    assert torch.allclose(finder.decision_function(latents[:50]), distances * norms, atol=1e-3)


def test_glm_equals_closed_form_least_squares_on_clipped_logits():
    # Latents far from the origin and logits beyond the clip exercise the shift and the clip.
    latents, logits, _ = planted(n=3000, d=10, scale=8.0, offset=5.0)
    assert (logits.abs() > 9.21).any()
    finder = GLMFinder(clip=9.21, chunk_size=700).fit(latents, logits)
    design = torch.cat([latents.double(), torch.ones(len(latents), 1, dtype=torch.float64)], 1)
    target = logits.double().clamp(-9.21, 9.21)
    solution = torch.linalg.lstsq(design, target).solution
    assert torch.allclose(finder.coef_.double(), solution[:-1].T, atol=1e-5)
    assert torch.allclose(finder.bias_.double(), solution[-1], atol=1e-4)
    residual = target - design @ solution
    r2 = 1 - (residual**2).sum(0) / ((target - target.mean(0)) ** 2).sum(0)
    for i, name in enumerate(finder.attributes_):
        assert finder.metrics_[name]["r2"] == pytest.approx(float(r2[i]), abs=1e-9)
        sign_acc = float(((design @ solution[:, i] > 0) == (logits[:, i] > 0)).double().mean())
        assert finder.metrics_[name]["sign_accuracy"] == pytest.approx(sign_acc, abs=1e-3)
        assert finder.metrics_[name]["n_samples"] == 3000


def test_glm_exact_linear_logits_give_r2_one():
    latents, _, truth = planted(n=500, d=6)
    logits = latents @ truth.T * 2.0 + 0.5
    finder = GLMFinder(clip=None).fit(latents, logits)
    assert torch.allclose(finder.coef_, 2.0 * truth, atol=1e-5)
    assert torch.allclose(finder.bias_, torch.full((3,), 0.5), atol=1e-5)
    assert all(m["r2"] == pytest.approx(1.0, abs=1e-9) for m in finder.metrics_.values())


def test_glm_streamed_equals_one_shot():
    latents, logits, _ = planted(n=5000, d=12)
    one_shot = GLMFinder(chunk_size=4096).fit(latents, logits, NAMES)
    streamed = GLMFinder(chunk_size=333).reset()
    for lo, hi in [(0, 1000), (1000, 1001), (1001, 3500), (3500, 5000)]:
        streamed.partial_fit(latents[lo:hi], logits[lo:hi], NAMES)
    with pytest.raises(NotFittedError, match="finalize"):
        _ = streamed.axes_
    streamed.finalize()
    assert torch.allclose(streamed.coef_, one_shot.coef_, atol=1e-6)
    assert torch.allclose(streamed.bias_, one_shot.bias_, atol=1e-6)
    evaluated = streamed.evaluate(latents, logits)
    for name in NAMES:
        assert streamed.metrics_[name]["r2"] == pytest.approx(one_shot.metrics_[name]["r2"], abs=1e-9)
        assert evaluated[name]["r2"] == pytest.approx(one_shot.metrics_[name]["r2"], abs=1e-6)
        assert evaluated[name]["sign_accuracy"] == pytest.approx(
            one_shot.metrics_[name]["sign_accuracy"], abs=1e-9
        )
    with pytest.raises(TlganError, match="earlier chunks"):
        streamed.partial_fit(latents[:10, :5], logits[:10])


@pytest.mark.parametrize("name,kwargs", [("glm", {"chunk_size": 500}), ("svm", {"ratio": 0.05})])
def test_parallel_fits_do_not_depend_on_thread_count(name, kwargs):
    latents, logits, _ = planted(n=6000, d=8)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = make_finder(name, **kwargs).fit(latents, logits, NAMES)
        torch.set_num_threads(2)
        two = make_finder(name, **kwargs).fit(latents, logits, NAMES)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.coef_, two.coef_) and torch.equal(one.bias_, two.bias_)
    assert one.metrics_ == two.metrics_


def test_logistic_metrics_and_split():
    latents, logits, _ = planted(n=4000, d=8, noise=1.0)
    finder = LogisticFinder(val_fraction=0.25, seed=3).fit(latents, logits, NAMES)
    for name in NAMES:
        m = finder.metrics_[name]
        assert m["n_train"] == 3000
        # Labels are sign(3 z.w + N(0,1)): the Bayes accuracy is about 0.9.
        assert 0.85 < m["val_accuracy"] <= 1.0 and 0.85 < m["train_accuracy"] <= 1.0
    again = LogisticFinder(val_fraction=0.25, seed=3).fit(latents, logits, NAMES)
    assert torch.equal(again.coef_, finder.coef_)


def test_logistic_needs_both_classes():
    latents, logits, _ = planted(n=500, d=4)
    logits[:, 1] = logits[:, 1].abs() + 0.1
    with pytest.raises(TlganError, match="'Male'.*all samples positive"):
        LogisticFinder().fit(latents, logits, NAMES)


def test_top_bottom_split_is_interfacegan_selection():
    scores = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    split = top_bottom_split(scores, ratio=0.05, val_fraction=0.3, seed=1, column=0)
    k = 50
    order = torch.argsort(scores, descending=True)
    top, bottom = set(order[:k].tolist()), set(order[-k:].tolist())
    train = split.train_index.tolist()
    val = split.val_index.tolist()
    assert len(train) == 2 * 35 and len(val) == 2 * 15
    positives = {
        i
        for i, lab in zip(train + val, split.train_label.tolist() + split.val_label.tolist(), strict=True)
        if lab > 0
    }
    negatives = set(train + val) - positives
    assert positives == top and negatives == bottom
    assert set(split.rest_index.tolist()) == set(range(1000)) - top - bottom
    same = top_bottom_split(scores, ratio=0.05, val_fraction=0.3, seed=1, column=0)
    other = top_bottom_split(scores, ratio=0.05, val_fraction=0.3, seed=2, column=0)
    assert torch.equal(same.train_index, split.train_index)
    assert not torch.equal(other.train_index, split.train_index)
    with pytest.raises(TlganError, match="too few samples.*N=40"):
        top_bottom_split(scores[:40], ratio=0.02)


def _svc_solution(x, y, C):
    svm = pytest.importorskip("sklearn.svm")
    clf = svm.SVC(kernel="linear", C=C, tol=1e-6).fit(x, y)
    return clf.coef_.reshape(-1), float(clf.intercept_[0])


@pytest.mark.parametrize("working_set", [True, False])
@pytest.mark.parametrize("C,spread", [(1.0, 3.0), (0.05, 0.7)])
def test_linear_svm_matches_sklearn_svc(working_set, C, spread):
    # Separable-ish (hard margin) and heavily overlapping classes (many bounded multipliers).
    g = torch.Generator().manual_seed(5)
    n, d = 2400, 10
    y = torch.where(torch.rand(n, generator=g) < 0.4, 1.0, -1.0).double()
    x = torch.randn(n, d, generator=g).double()
    x[:, 0] += spread * y
    x[:, 1] += 0.5 * spread * y
    ours = fit_linear_svm(x, y, C=C, working_set=working_set)
    w, b = _svc_solution(x.numpy(), y.numpy(), C)
    assert cos(ours.weight, w) > 0.9999
    assert ours.bias == pytest.approx(b, abs=2e-3 * max(1.0, abs(b)))
    assert float(np.linalg.norm(ours.weight)) == pytest.approx(float(np.linalg.norm(w)), rel=2e-3)


def _overlapping_classes(seed, n, d, spread):
    g = torch.Generator().manual_seed(seed)
    y = torch.where(torch.rand(n, generator=g) < 0.4, 1.0, -1.0).double()
    x = torch.randn(n, d, generator=g).double()
    x[:, 0] += spread * y
    x[:, 1] += 0.5 * spread * y
    return x.numpy(), y.numpy()


@pytest.mark.parametrize("C,spread", [(1.0, 3.0), (0.05, 0.7)])
def test_a_small_svm_is_solved_to_the_optimum_in_the_sample_space(C, spread):
    from tlgan.axes.finders import svm as svm_module

    n, d = 160, 120  # few samples for their size, as InterFaceGAN's 560 of 512-d latents
    x, y = _overlapping_classes(6, n, d, spread)
    assert svm_module._sample_space_is_cheaper(n, d + 1)
    ours = fit_linear_svm(x, y, C=C)
    rows = np.concatenate([y[:, None] * x, y[:, None]], axis=1)
    alpha, b, _, gap = svm_module._svm_ipm(rows, C, 1e-12, 200)
    exact = x.T @ (y * alpha)
    assert gap < 1e-11
    if C < 1:  # many multipliers at the bound C
        assert (alpha > C * (1 - 1e-6)).sum() > 10
    w, b_svc = _svc_solution(x, y, C)
    assert cos(ours.weight, w) > 0.9999 and ours.bias == pytest.approx(b_svc, abs=2e-3 * max(1.0, abs(b_svc)))
    assert cos(ours.weight, exact) > 1 - 1e-8 and ours.gap < 1e-6


def test_svm_finder_metrics_on_separable_data():
    latents, logits, truth = planted(n=20000, d=8, noise=0.1)
    finder = SVMFinder(ratio=0.02, val_fraction=0.3, seed=0).fit(latents, logits, NAMES)
    for i, name in enumerate(NAMES):
        m = finder.metrics_[name]
        assert m["n_train"] == 2 * (400 - 120)
        assert m["val_accuracy"] == 1.0  # extremes 4 standard deviations apart
        assert m["remaining_accuracy"] > 0.9
        assert 2 <= m["n_support"] <= m["n_train"]
        assert cos(finder.axes_[i], truth[i]) > 0.98
    assert finder.metrics_["Smiling"].keys() >= {"val_accuracy", "remaining_accuracy", "n_train"}


def test_to_feature_axes_carries_method_params_and_metrics(tmp_path):
    latents, logits, _ = planted(n=3000, d=6)
    finder = SVMFinder(ratio=0.05, C=0.5).fit(latents, logits, NAMES)
    axes = finder.to_feature_axes(space="w", generator="toy")
    assert axes.method == "svm" and axes.space == "w" and axes.generator == "toy"
    assert axes.attributes == NAMES
    assert axes.info == {"ratio": 0.05, "val_fraction": 0.3, "C": 0.5, "seed": 0, "tol": 1e-6}
    assert axes.metrics == finder.metrics_
    renamed = finder.to_feature_axes(["a", "b", "c"])
    assert renamed.attributes == ["a", "b", "c"] and renamed.metrics["b"] == finder.metrics_["Male"]
    axes.save(tmp_path / "axes.safetensors")
    back = FeatureAxes.load(tmp_path / "axes.safetensors")
    assert torch.equal(back.vectors, axes.vectors) and back.info == axes.info
    with pytest.raises(TlganError, match="2 attribute names for 3"):
        finder.to_feature_axes(["a", "b"])


@pytest.mark.parametrize("name", FINDERS.names())
def test_unfitted_finder_raises_clear_error(name):
    finder = make_finder(name)
    with pytest.raises(TlganError, match="not fitted yet.*call fit"):
        _ = finder.axes_
    with pytest.raises(NotFittedError):
        finder.to_feature_axes(NAMES)
    assert not hasattr(finder, "metrics_")
    with pytest.raises(AttributeError):
        _ = finder.no_such_thing


@pytest.mark.parametrize("name", FINDERS.names())
def test_finders_validate_inputs(name):
    latents, logits, _ = planted(n=2000, d=5)
    finder = make_finder(name)
    if _unsupervised(name):
        _unsupervised_finder_validates_latents(make_finder(name, n_components=2), latents, logits)
        return
    bad = logits.clone()
    bad[[3, 8], 1] = float("nan")
    with pytest.raises(TlganError, match=r"scores has 2 row\(s\) with NaN.*first at row 3"):
        finder.fit(latents, bad, NAMES)
    bad_latents = latents.clone()
    bad_latents[7, 0] = float("inf")
    with pytest.raises(TlganError, match=r"latents has 1 row\(s\)"):
        finder.fit(bad_latents, logits, NAMES)
    in_training = latents.clone()  # the highest-scored sample: one svm trains on
    in_training[int(logits[:, 0].argmax()), 1] = float("nan")
    with pytest.raises(TlganError, match=r"latents has 1 row\(s\)"):
        finder.fit(in_training, logits, NAMES)
    with pytest.raises(TlganError, match="2-D"):
        finder.fit(latents[None], logits, NAMES)
    with pytest.raises(TlganError, match=r"scores\[:, None\]"):
        finder.fit(latents, logits[:, 0], NAMES)
    with pytest.raises(TlganError, match="2000 rows but scores have 1999"):
        finder.fit(latents, logits[:-1], NAMES)
    with pytest.raises(TlganError, match="2 attribute names for 3 score columns"):
        finder.fit(latents, logits, NAMES[:2])
    flat = logits.clone()
    flat[:, 2] = 1.5
    with pytest.raises(TlganError, match="'Young'.*same for every sample"):
        finder.fit(latents, flat, NAMES)


def _unsupervised_finder_validates_latents(finder, latents, logits):
    """The latent contracts of :func:`test_finders_validate_inputs` for a finder that ignores scores."""
    generator = _linear_generator(latents.shape[1])
    bad_latents = latents.clone()
    bad_latents[7, 0] = float("inf")
    with pytest.raises(TlganError, match=r"latents has 1 row\(s\).*first at row 7"):
        finder.fit(bad_latents, logits, NAMES, generator=generator)
    with pytest.raises(TlganError, match=r"latents.*\(2000,\)"):
        finder.fit(latents[:, 0], logits, NAMES, generator=generator)
    # Not a contract here: scores and attribute names are ignored (components are named pc0, pc1, ...),
    # so NaN scores or a wrong number of names fit all the same.
    bad = logits.clone()
    bad[[3, 8], 1] = float("nan")
    fitted = finder.fit(latents, bad, NAMES[:2], generator=generator)
    assert fitted.attributes_[0] == "pc0" and torch.isfinite(fitted.axes_).all()


def test_svm_too_few_samples_for_ratio():
    latents, logits, _ = planted(n=60, d=4)
    with pytest.raises(TlganError, match="too few samples for 'Smiling'.*ratio=0.02"):
        SVMFinder(ratio=0.02).fit(latents, logits, NAMES)


def test_registry_and_make_finder_errors():
    assert FINDERS.names() == ["glm", "logistic", "pca", "sefa", "svm"]
    assert isinstance(make_finder("svm", ratio=0.1), SVMFinder)
    with pytest.raises(TlganError, match="did you mean 'glm'"):
        make_finder("glmm")
    with pytest.raises(TlganError, match="no option 'ratio'.*clip"):
        make_finder("glm", ratio=0.1)
    assert repr(GLMFinder(clip=None)) == "GLMFinder(clip=None, chunk_size=16384, target='logit')"


def test_bench_fit_quick_keys_and_agreement():
    pytest.importorskip("sklearn")
    from tlgan.bench.fitting import bench_fit

    result = bench_fit(quick=True)
    for key in (
        "fit_glm_seconds",
        "fit_glm_sklearn_seconds",
        "fit_glm_speedup_vs_sklearn",
        "glm_cosine_vs_sklearn",
        "fit_svm_seconds",
        "fit_svm_sklearn_seconds",
        "fit_svm_speedup_vs_sklearn",
        "svm_cosine_vs_sklearn",
    ):
        assert key in result and math.isfinite(result[key])
    assert result["glm_cosine_vs_sklearn"] > 0.9999
    assert result["svm_cosine_vs_sklearn"] > 0.99
    assert result["glm_cosine_to_truth"] > 0.99
    # InterFaceGAN's procedure trains on its own shuffle of the same top/bottom samples
    assert result["svm_cosine_vs_interfacegan"] > 0.9
    assert result["fit_glm_gram_seconds"] > 0 and result["fit_svm_per_attribute_seconds"] > 0
    # Every ratio is the quotient of the two times it names (times rounded to 4 decimals, ratios
    # to 2 or 3), finite, and within what two CPU implementations of the same fit can differ by.
    for ratio, num, den in (
        ("fit_glm_speedup_vs_sklearn", "fit_glm_sklearn_seconds", "fit_glm_seconds"),
        ("fit_glm_over_gram", "fit_glm_seconds", "fit_glm_gram_seconds"),
        ("fit_svm_speedup_vs_sklearn", "fit_svm_sklearn_seconds", "fit_svm_seconds"),
        ("fit_svm_solver_speedup_vs_sklearn", "fit_svm_sklearn_seconds", "fit_svm_solver_seconds"),
        (
            "fit_svm_speedup_vs_interfacegan",
            "interfacegan_per_attribute_seconds",
            "fit_svm_per_attribute_seconds",
        ),
    ):
        _assert_ratio_of(result, ratio, num, den)
    assert (result["fit_n"], result["fit_d"], result["fit_attributes"], result["fit_svm_attributes"]) == (
        4000,
        32,
        4,
        2,
    )
    assert result["svm_proc_attributes"] == 2 and result["fit_svm_n_train"] == 2 * 56


def _assert_ratio_of(result, ratio, num, den, low=1e-3, high=1e3):
    """``result[ratio]`` is finite, in (low, high), and equals result[num] / result[den] up to their rounding."""
    value, a, b = result[ratio], result[num], result[den]
    assert math.isfinite(value) and low < value < high, (ratio, value)
    assert a > 0 and b > 0, (num, a, den, b)
    exact = a / b
    slack = 5e-3 + exact * (5e-5 / a + 5e-5 / b)  # the rounding of the two times and of the ratio
    assert abs(value - exact) <= 1.01 * slack, (ratio, value, exact)


# --------------------------------------------------------------------------- disentangling
def _random_unit(d, k, seed):
    return torch.nn.functional.normalize(
        torch.randn(k, d, generator=torch.Generator().manual_seed(seed)), dim=1
    )


def test_project_out_is_orthogonal_to_every_locked_axis():
    locked = _random_unit(16, 4, 0)
    direction = _random_unit(16, 1, 1)[0]
    out = project_out(direction, locked)
    assert out.dtype == torch.float32
    assert float(out.norm()) == pytest.approx(1.0, abs=1e-6)
    assert (locked @ out).abs().max() < 1e-6
    # Whatever is left is the part of the direction outside the span: it keeps its orientation.
    assert float(out @ direction) > 0


def test_project_out_single_lock_closed_form():
    u, v = _random_unit(8, 2, 3)
    expected = u - (u @ v) * v
    expected = expected / expected.norm()
    assert torch.allclose(project_out(u, v[None]), expected, atol=1e-6)
    assert torch.allclose(project_out(u, v), expected, atol=1e-6)  # a single (D,) lock works too


def test_project_out_nearly_parallel_locks_and_span_error():
    v = _random_unit(8, 1, 4)[0].double()
    e = torch.zeros(8, dtype=torch.float64)
    e[0] = 1.0
    locked = torch.stack([v, v + 1e-9 * e])
    u = _random_unit(8, 1, 5)[0].double()
    out = project_out(u, locked)
    assert out.dtype == torch.float64
    assert abs(float(out @ v)) < 1e-8 and float(out.norm()) == pytest.approx(1.0)
    a, b = _random_unit(8, 2, 6)
    with pytest.raises(TlganError, match="inside the span"):
        project_out(0.3 * a - 2.0 * b, torch.stack([a, b]))


def test_disentangle_with_two_non_orthogonal_locks():
    d = 10
    basis = _random_unit(d, 3, 7)
    q, _ = torch.linalg.qr(basis.T)
    a = q[:, 0]
    b = 0.6 * q[:, 0] + 0.8 * q[:, 1]  # cos(a, b) = 0.6
    c = torch.nn.functional.normalize(0.5 * q[:, 0] + 0.5 * q[:, 1] + 0.7 * q[:, 2], dim=0)
    axes = FeatureAxes(torch.stack([a, b, c]), ["A", "B", "C"], metrics={"C": {"r2": 0.5}}, info={"n": 3})
    out = disentangle(axes, ["A", "B"])
    assert abs(float(out["C"] @ a)) < 1e-6 and abs(float(out["C"] @ b)) < 1e-6
    assert torch.allclose(out["C"], q[:, 2] * torch.sign(q[:, 2] @ c), atol=1e-5)
    # Each locked axis is projected off the other lock only.
    expected_a = (a - (a @ b) * b) / (a - (a @ b) * b).norm()
    assert torch.allclose(out["A"], expected_a, atol=1e-6)
    assert abs(float(out["A"] @ b)) < 1e-6 and abs(float(out["B"] @ a)) < 1e-6
    assert out.info == {"n": 3, "locks": ["A", "B"]} and out.metrics == axes.metrics
    assert torch.allclose(disentangle(axes, ["C"])["C"], c)  # a lone lock leaves itself alone
    with pytest.raises(TlganError, match="did you mean 'A'"):
        disentangle(axes, ["a"])


def test_cosine_matrix_known_values():
    vectors = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-3.0, 0.0]])
    expected = torch.tensor([[1.0, 2**-0.5, -1.0], [2**-0.5, 1.0, -(2**-0.5)], [-1.0, -(2**-0.5), 1.0]])
    assert torch.allclose(cosine_matrix(vectors), expected, atol=1e-6)
    with pytest.raises(TlganError, match="zero"):
        cosine_matrix(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


# --------------------------------------------------------------------------- InterFaceGAN files
def _axes(d=12):
    return FeatureAxes(_random_unit(d, 3, 9), NAMES, space="w", method="svm")


def test_interfacegan_round_trip(tmp_path):
    axes = _axes()
    paths = export_boundaries(axes, tmp_path / "boundaries")
    assert [p.name for p in paths] == [f"{n}_w_boundary.npy" for n in NAMES]  # InterFaceGAN names w axes so
    assert sorted(p.name for p in (tmp_path / "boundaries").iterdir()) == sorted(
        p.name for p in paths
    )  # no temp files
    raw = np.load(paths[0], allow_pickle=False)
    assert raw.shape == (1, 12) and raw.dtype == np.float32
    assert np.linalg.norm(raw) == pytest.approx(1.0, abs=1e-6)
    back = import_boundaries(tmp_path / "boundaries")  # the space comes from the names
    assert sorted(back.attributes) == sorted(NAMES) and back.method == "interfacegan" and back.space == "w"
    for name in NAMES:
        assert torch.allclose(back[name], axes[name], atol=1e-6)
    chosen = import_boundaries(tmp_path / "boundaries", attributes=["Young", "Smiling"])
    assert chosen.attributes == ["Young", "Smiling"]
    renamed = import_boundaries([paths[1]], attributes=["man"])
    assert renamed.attributes == ["man"] and torch.allclose(renamed["man"], axes["Male"], atol=1e-6)


def test_interfacegan_reads_unnormalised_flat_arrays(tmp_path):
    np.save(tmp_path / "age_boundary.npy", np.array([3.0, 4.0]))
    axes = import_boundaries(tmp_path)
    assert axes.attributes == ["age"] and torch.allclose(axes["age"], torch.tensor([0.6, 0.8]))


@pytest.mark.parametrize(
    "array,match",
    [
        (np.ones((2, 5), np.float32), r"shape \(2, 5\)"),
        (np.ones((1, 1, 5), np.float32), r"shape \(1, 1, 5\)"),
        (np.array([1.0, np.nan]), "NaN"),
        (np.zeros((1, 4)), "zero vector"),
        (np.array(["a", "b"]), "float array"),
    ],
)
def test_interfacegan_bad_files(tmp_path, array, match):
    np.save(tmp_path / "x_boundary.npy", array)
    with pytest.raises(TlganError, match=match):
        import_boundaries(tmp_path)


def test_interfacegan_refuses_pickles_mismatched_sizes_and_missing(tmp_path):
    np.save(tmp_path / "obj_boundary.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TlganError, match="not a plain NumPy array"):
        import_boundaries([tmp_path / "obj_boundary.npy"])
    np.save(tmp_path / "a_boundary.npy", np.ones((1, 4), np.float32))
    np.save(tmp_path / "b_boundary.npy", np.ones((1, 5), np.float32))
    with pytest.raises(TlganError, match="size 5 but .* size 4"):
        import_boundaries([tmp_path / "a_boundary.npy", tmp_path / "b_boundary.npy"])
    with pytest.raises(TlganError, match="did you mean 'a'"):
        import_boundaries(tmp_path, attributes=["aa"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TlganError, match="no \\*_boundary.npy"):
        import_boundaries(empty)


def test_svm_newton_step_in_sample_space_equals_the_latent_space_one():
    from tlgan.axes.finders.svm import _svm_ipm

    rng = np.random.default_rng(3)
    for n, d in ((60, 64), (200, 40)):
        x = rng.standard_normal((n, d))
        y = np.where(x @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
        rows = np.concatenate([y[:, None] * x, y[:, None]], axis=1)
        a1, b1, _, gap1 = _svm_ipm(rows, 1.0, 1e-9, 100, sample_space=False)
        a2, b2, _, gap2 = _svm_ipm(rows, 1.0, 1e-9, 100, sample_space=True)
        assert gap1 < 1e-8 and gap2 < 1e-8
        assert cos(x.T @ (y * a1), x.T @ (y * a2)) > 1 - 1e-9 and abs(b1 - b2) < 1e-6


def test_a_clip_runs_glm_fits_the_probability_whose_size_other_factors_do_not_steer():
    """A CLIP logit's sign follows the attribute, its size also another factor (here exp(s_b)): the
    raw logit's least squares leans toward that factor; the probability target (what a clip: run's
    glm uses) does not."""
    from tlgan.axes.finders import score_options

    g = torch.Generator().manual_seed(4)
    n, d = 20_000, 64
    z = torch.randn(n, d, generator=g)
    w = torch.linalg.qr(torch.randn(d, 2, generator=g))[0].T  # orthonormal w_a, w_b
    s_a, s_b = z @ w[0] - 1.3, z @ w[1]  # a rare attribute (10 %), an unrelated factor
    logits = (5 * torch.tanh(3 * s_a) * torch.exp(0.7 * s_b))[:, None]
    options = score_options("glm", "clip:some/model")
    assert options == {"target": "probability"}
    assert score_options("glm", "clip:", {"target": "logit"}) == {"target": "logit"}  # given wins
    assert score_options("glm", "toyfaces-classifier") == {} and score_options("logistic", "clip:") == {}
    probability = make_finder("glm", **options).fit(z, logits, ["A"]).axes_[0]
    raw = make_finder("glm", clip=None).fit(z, logits, ["A"]).axes_[0]
    assert cos(probability, w[0]) > 0.93  # measured 0.967 (seed 5: 0.965)
    assert cos(raw, w[0]) < 0.7  # measured 0.536: most logits are negative, and exp(s_b) scales them
