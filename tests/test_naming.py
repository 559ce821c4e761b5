"""Naming unsupervised directions after the attribute they move, on a planted generator/classifier pair."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.evaluation.naming import name_directions, profile_of
from tlgan.models.base import ModuleClassifier, ModuleGenerator

D = 8
ATTRS = ["Smiling", "Male", "Young"]


def planted_pair():
    """A generator that writes z/10 into the first D pixels and a classifier whose logit for
    attribute a is 4 * (z . e_a): the true axis of Smiling, Male, Young is e_0, e_1, e_2."""
    to_image = nn.Linear(D, 3 * 8 * 8, bias=False)
    read = nn.Linear(3 * 8 * 8, len(ATTRS))
    with torch.no_grad():
        to_image.weight.zero_()
        to_image.weight[:D].copy_(0.1 * torch.eye(D))
        read.weight.zero_()
        read.bias.zero_()
        for a in range(len(ATTRS)):
            read.weight[a, a] = 40.0
    generator = ModuleGenerator(
        nn.Sequential(to_image, nn.Unflatten(1, (3, 8, 8))), z_dim=D, img_resolution=8
    )
    classifier = ModuleClassifier(nn.Sequential(nn.Flatten(), read), ATTRS, input_resolution=8)
    return generator, classifier


def test_naming_assigns_planted_directions_with_their_sign():
    generator, classifier = planted_pair()
    e = torch.eye(D)
    mixed = torch.nn.functional.normalize(0.9 * e[1] + 0.4 * e[2], dim=0)
    vectors = torch.stack([-e[0], mixed, e[5]])  # -Smiling, mostly +Male, nothing
    axes = FeatureAxes(vectors, ["pc0", "pc1", "pc2"], generator="planted", method="pca")
    faces = torch.randn(64, D, generator=torch.Generator().manual_seed(0))
    named = name_directions(axes, generator, classifier, faces)
    table = named.info["naming"]["components"]
    assert table["pc0"]["label"] == "pc0 ≈ -Smiling" and table["pc0"]["sign"] == -1
    assert table["pc1"]["label"] == "pc1 ≈ +Male"
    assert table["pc2"]["label"] == "pc2: moves no attribute" and table["pc2"]["attribute"] is None
    assert table["pc0"]["purity"] > 0.99
    assert 0.5 < table["pc1"]["purity"] < 0.9 and table["pc1"]["profile"]["Young"] > 0.05
    # renamed and turned so that + raises the attribute; the unnamed one keeps its name
    assert named.attributes == ["Smiling", "Male", "pc2"]
    assert torch.allclose(named["Smiling"], e[0])
    assert torch.allclose(named["Male"], mixed)
    assert named.metrics["Smiling"]["purity"] == pytest.approx(table["pc0"]["purity"])
    assert axes.attributes == ["pc0", "pc1", "pc2"]  # the input is left alone
    kept = name_directions(axes, generator, classifier, faces, rename=False)
    assert kept.attributes == ["pc0", "pc1", "pc2"] and torch.equal(kept.vectors, axes.vectors)


def test_naming_keeps_the_purest_direction_per_attribute():
    generator, classifier = planted_pair()
    e = torch.eye(D)
    vectors = torch.stack([torch.nn.functional.normalize(e[0] + 0.5 * e[1], dim=0), e[0]])
    axes = FeatureAxes(vectors, ["pc0", "pc1"], generator="planted", method="sefa")
    named = name_directions(
        axes, generator, classifier, torch.randn(32, D, generator=torch.Generator().manual_seed(1))
    )
    assert named.attributes == ["pc0", "Smiling"]
    assert named.info["naming"]["components"]["pc0"]["label"] == "pc0 ≈ +Smiling"


def test_profile_of_and_bad_input():
    change = torch.tensor([[-0.3, 0.1], [0.3, -0.1]])
    entry = profile_of(change, [-2, 2], ["A", "B"])
    assert entry["attribute"] == "A" and entry["sign"] == 1 and entry["purity"] == pytest.approx(0.75)
    assert entry["profile"]["B"] == pytest.approx(-0.1)
    with pytest.raises(TlganError, match="non-zero step"):
        profile_of(change, [0, 0], ["A", "B"])
    generator, classifier = planted_pair()
    axes = FeatureAxes(torch.eye(D)[:1], ["pc0"])
    with pytest.raises(TlganError, match="min_change"):
        name_directions(axes, generator, classifier, torch.zeros(2, D), min_change=-1)
