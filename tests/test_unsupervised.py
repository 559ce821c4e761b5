"""Unsupervised finders (pca, sefa) against planted answers, and the generators' latent-weight hook."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tlgan.axes.finders import PCAFinder, SeFaFinder, make_finder
from tlgan.errors import TlganError
from tlgan.models.base import ModuleGenerator
from tlgan.models.networks import DCGANGenerator


def orthonormal(d, k, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64))[0].T.float()  # (k, d)


def abs_cos(u, v):
    u, v = u.double().flatten(), v.double().flatten()
    return float((u @ v).abs() / (u.norm() * v.norm()))


def test_pca_recovers_planted_low_rank_covariance():
    n, d = 20_000, 64
    planted = orthonormal(d, 3, seed=1)
    g = torch.Generator().manual_seed(2)
    scales = torch.tensor([3.0, 2.0, 1.5])
    w = 0.5 * torch.randn(n, d, generator=g) + (torch.randn(n, 3, generator=g) * scales) @ planted + 4.0
    finder = PCAFinder(n_components=5).fit(w)  # no generator: the latents themselves
    assert finder.attributes_ == ["pc0", "pc1", "pc2", "pc3", "pc4"]
    for i in range(3):
        assert abs_cos(finder.axes_[i], planted[i]) >= 0.99
    expected = scales**2 + 0.25
    assert torch.allclose(finder.values_[:3], expected, rtol=0.05)
    above = [finder.metrics_[f"pc{i}"]["above_noise"] for i in range(5)]
    assert above == [True, True, True, False, False]
    assert finder.summary_["isotropic"] is False and finder.summary_["n_above_noise"] == 3
    # decision_function gives centred coordinates: mean ~0, variance = the component's variance
    coords = finder.decision_function(w)
    assert (
        coords[:, 0].mean().abs() < 0.05
        and abs(float(coords[:, 0].var()) / float(finder.values_[0]) - 1) < 1e-3
    )
    axes = finder.to_feature_axes(space="w", generator="planted")
    assert axes.method == "pca" and axes.attributes[0] == "pc0" and axes.info["source"] == "latent"
    assert axes.metrics["pc0"]["variance"] == pytest.approx(float(finder.values_[0]), rel=1e-6)


def test_pca_on_isotropic_latents_finds_nothing():
    z = torch.randn(20_000, 128, generator=torch.Generator().manual_seed(0))
    finder = PCAFinder(n_components=16).fit(z)
    assert finder.summary_["isotropic"] is True
    assert not any(m["above_noise"] for m in finder.metrics_.values())


def test_pca_activations_regressed_back_to_z():
    d, f = 32, 48
    v = orthonormal(d, 2, seed=3)
    g = torch.Generator().manual_seed(4)
    u = torch.linalg.qr(torch.randn(f, 2, generator=g))[0]
    first = nn.Linear(d, f, bias=False)
    with torch.no_grad():  # the first layer stretches latent direction v[0] most, then v[1], the rest little
        first.weight.copy_(
            0.8 * u[:, :1] @ v[:1] + 0.4 * u[:, 1:] @ v[1:] + 0.005 * torch.randn(f, d, generator=g)
        )
    net = nn.Sequential(first, nn.Tanh(), nn.Linear(f, 3 * 8 * 8), nn.Tanh(), nn.Unflatten(1, (3, 8, 8)))
    generator = ModuleGenerator(net, z_dim=d)
    z = torch.randn(3000, d, generator=torch.Generator().manual_seed(5))
    finder = PCAFinder(n_components=4, source="activations", layer="module.1").fit(z, generator=generator)
    assert finder.summary_["source"] == "activations"
    assert abs_cos(finder.axes_[0], v[0]) >= 0.99
    assert abs_cos(finder.axes_[1], v[1]) >= 0.97
    with pytest.raises(TlganError, match="no feature layer"):
        PCAFinder(n_components=4, source="activations").fit(z, generator=generator)
    with pytest.raises(TlganError, match="unknown layer 'module.l'; did you mean"):
        PCAFinder(n_components=4, source="activations", layer="module.l").fit(z, generator=generator)
    with pytest.raises(TlganError, match="pass generator"):
        PCAFinder(n_components=4, source="activations").fit(z)


def test_pca_auto_source_uses_the_dcgan_feature_layer():
    generator = DCGANGenerator(z_dim=16, resolution=16, width=4).eval()
    z = generator.sample_latents(600, seed=0)
    finder = make_finder("pca", n_components=3).fit(z, generator=generator, space="z")
    assert finder.summary_["source"] == "activations" and finder.summary_["layer"] == generator.feature_layer
    assert torch.allclose(finder.axes_.norm(dim=1), torch.ones(3), atol=1e-5)


def test_sefa_returns_the_planted_dominant_direction():
    generator = DCGANGenerator(z_dim=24, resolution=8, width=4).eval()
    v = orthonormal(24, 2, seed=6)
    g = torch.Generator().manual_seed(7)
    f = generator.project.out_features
    with torch.no_grad():
        generator.project.weight.copy_(
            5 * torch.randn(f, 1, generator=g) @ v[:1] + 0.3 * torch.randn(f, 24, generator=g)
        )
    for normalize in (False, True):
        finder = SeFaFinder(n_components=4, normalize=normalize).fit(generator=generator)
        assert abs_cos(finder.axes_[0], v[0]) >= 0.99
        assert finder.values_[0] > 5 * finder.values_[1]
    assert generator.latent_weight("z").shape == (f, 24)
    axes = finder.to_feature_axes(generator="planted")
    assert axes.attributes == ["pc0", "pc1", "pc2", "pc3"] and axes.metrics["pc0"]["eigenvalue_ratio"] > 0.3


def test_latent_weight_finds_a_first_transposed_conv():
    conv = nn.ConvTranspose2d(10, 3, kernel_size=8)
    net = nn.Sequential(nn.Unflatten(1, (10, 1, 1)), conv, nn.Tanh())
    generator = ModuleGenerator(net, z_dim=10)
    weight = generator.latent_weight()
    assert weight.shape == (3 * 8 * 8, 10)
    # The reshaped kernel really is the map from the latent to the conv's (pre-bias) output.
    z = torch.randn(5, 10)
    with torch.no_grad():
        out = conv(z[:, :, None, None]) - conv.bias[None, :, None, None]
    assert torch.allclose(out.reshape(5, -1), z @ weight.T, atol=1e-5)


def test_sefa_explains_when_there_is_no_weight():
    from tlgan.models import load_generator

    with pytest.raises(TlganError, match="analytic renderer with no weights"):
        SeFaFinder().fit(generator=load_generator("toyfaces-render"))
    odd = ModuleGenerator(
        nn.Sequential(nn.Unflatten(1, (4, 2, 2)), nn.Upsample(scale_factor=4), nn.Conv2d(4, 3, 1)), z_dim=16
    )
    with pytest.raises(TlganError, match="override latent_weight"):
        SeFaFinder().fit(generator=odd)
    with pytest.raises(TlganError, match="pass generator"):
        SeFaFinder().fit(torch.randn(10, 16))
    with pytest.raises(TlganError, match="leave it unset"):
        SeFaFinder(layers=[0, 1]).fit(generator=DCGANGenerator(z_dim=8, resolution=8, width=2))
    with pytest.raises(TlganError, match="n_components"):
        SeFaFinder(n_components=20).fit(generator=DCGANGenerator(z_dim=8, resolution=8, width=2))


def test_bench_unsupervised_quick_agrees_with_references():
    pytest.importorskip("sklearn")
    from tlgan.bench.unsupervised import bench_unsupervised

    result = bench_unsupervised(quick=True)
    assert result["pca_cosine_vs_sklearn_top8_min"] > 0.999
    assert result["sefa_style_stack_cosine_vs_svd_top8_min"] > 0.999
    assert result["sefa_style_stack_shape"] == [512, 64]
    assert result["pca_seconds"] > 0 and result["sefa_style_stack_seconds"] > 0
    assert set(result) == {
        "pca_n",
        "pca_d",
        "pca_components",
        "pca_threads",
        "pca_seconds",
        "pca_sklearn_seconds",
        "pca_speedup_vs_sklearn",
        "pca_cosine_vs_sklearn_top8_min",
        "sefa_style_stack_shape",
        "sefa_style_stack_seconds",
        "sefa_style_stack_svd_seconds",
        "sefa_style_stack_cosine_vs_svd_top8_min",
    }
    # The ratio is the quotient of the times it names (rounded to 4 decimals; it to 2), finite and plausible.
    ratio, ours, theirs = (
        result["pca_speedup_vs_sklearn"],
        result["pca_seconds"],
        result["pca_sklearn_seconds"],
    )
    assert math.isfinite(ratio) and 1e-3 < ratio < 1e3 and theirs > 0
    assert abs(ratio - theirs / ours) <= 1.01 * (5e-3 + theirs / ours * (5e-5 / ours + 5e-5 / theirs))
    assert (
        math.isfinite(result["sefa_style_stack_svd_seconds"]) and result["sefa_style_stack_svd_seconds"] > 0
    )


def test_the_studio_edits_unnamed_components():
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from tlgan.axes import FeatureAxes
    from tlgan.models import load_generator
    from tlgan.studio.app import create_app

    generator = load_generator("toyfaces-render")
    truth = generator.true_axes(["Smiling", "Male"])
    net = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 2))
    from tlgan.models.base import ModuleClassifier

    classifier = ModuleClassifier(net, ["Smiling", "Male"], name="tiny").eval()
    components = orthonormal(512, 2, seed=9)
    axes = FeatureAxes(
        torch.cat([components, truth.vectors[:1]]),
        ["pc0", "pc1", "Smiling"],
        method="pca",
        generator="toyfaces-render",
    )
    client = TestClient(create_app(generator, classifier, axes, generator_name="toyfaces-render"))
    info = client.get("/api/attributes").json()
    assert [(a["name"], a["scored"]) for a in info["attributes"]] == [
        ("pc0", False),
        ("pc1", False),
        ("Smiling", True),
    ]
    assert info["scored_attributes"] == ["Smiling", "Male"]
    body = {"seed": 3, "amounts": {"pc0": 2.0, "pc1": -1.0}, "locks": ["Smiling"]}
    reply = client.post("/api/render", json=body)
    assert reply.status_code == 200, reply.text
    base = generator.sample_latents_at([3], seed=0)[0]
    moved = torch.tensor(reply.json()["latent"]) - base
    # the lock keeps the Smiling projection fixed while both components move
    assert abs(float(moved @ truth["Smiling"])) < 1e-4 and float(moved.norm()) > 1.0
    probs = client.post("/api/probabilities", json=body).json()["probabilities"]
    assert set(probs) == {"Smiling", "Male"}


def test_sefa_on_stylegan2_factorises_the_chosen_style_layers():
    from tlgan.models.formats.fixtures import tiny_stylegan2

    generator = tiny_stylegan2()
    convs = generator.conv_layers()
    some = SeFaFinder(n_components=4, layers=[0, 1], normalize=False).fit(generator=generator, space="w")
    weight = torch.cat([convs[k].affine.effective_weight().detach() for k in (0, 1)]).double()
    top = torch.linalg.svd(weight, full_matrices=False).Vh[0]
    assert abs_cos(some.axes_[0], top) > 0.999
    assert some.summary_["weight_shape"] == list(weight.shape) and some.summary_["layers"] == [0, 1]
    every = SeFaFinder(n_components=4).fit(
        generator.sample_latents(8, space="wp"), generator=generator, space="wp"
    )
    assert every.summary_["weight_shape"][0] > weight.shape[0]
    with pytest.raises(TlganError, match="take w"):
        SeFaFinder(n_components=4).fit(generator=generator, space="z")
