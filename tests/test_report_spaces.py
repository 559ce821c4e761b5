"""The report's section "Latent spaces" on a tiny toyfaces-style run: z against w with the truth in both."""

import json

import pytest

from tlgan.models import load_classifier, load_generator
from tlgan.sampling import sample

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    from tlgan.evaluation.report import write_report
    from tlgan.pipeline import fit_axes

    root = tmp_path_factory.mktemp("spaces")
    G, C = load_generator("toyfaces-style"), load_classifier("toyfaces-classifier")
    run = sample(G, C, 1500, root / "run", seed=3, space="w", progress=False)
    axes = fit_axes(run, "logistic")
    write_report(
        run,
        axes,
        root / "out",
        methods=["logistic"],
        unsupervised=(),
        edit_faces=6,
        steps=(-1.5, 1.5),
        progress=False,
    )
    document = json.loads((root / "out" / "report.json").read_text())
    html = (root / "out" / "report.html").read_text()
    return document, html, root


def test_spaces_section_measures_z_against_w_with_the_truth(report):
    document, html, root = report
    spaces = document["spaces"]
    assert spaces["method"] == "logistic" and spaces["n"] == 1500
    z, w = spaces["spaces"]["z"], spaces["spaces"]["w"]
    assert z["truth"] == "truth-average-gradient" and w["truth"] == "truth"
    assert len(z["cosine_to_truth"]) == len(w["cosine_to_truth"]) == 17
    # InterFaceGAN's finding, now against the truth: the same faces and labels give axes much
    # closer to the truth, and a cleaner separation, in w than in z.
    assert w["mean"] > z["mean"] + 0.2 and w["mean"] > 0.7  # 1,500 faces: 0.78 and 0.39
    assert w["mean_separability"] > z["mean_separability"] + 0.05
    assert 0.25 < z["mean"] < 0.9
    # The w column is the logistic fit of the axes under test (the same samples, the same finder).
    assert document["ground_truth"]["cosine_to_truth"]["Male"] == pytest.approx(
        w["cosine_to_truth"]["Male"], abs=1e-3
    )


def test_spaces_section_finds_each_attributes_layers(report):
    document, html, _ = report
    layers = document["spaces"]["layers"]
    assert layers["faces"] == 6 and len(layers["attributes"]) == 17
    # Nothing outside the middle layers reads the smile or the glasses, so even a fitted axis
    # moves them only on their own layers.
    for name in ("Smiling", "Eyeglasses"):
        row = layers["attributes"][name]
        assert row["layers"] == [4, 5, 6, 7]
        assert row["effect_all"] > 1.0 and row["own_ratio"] > 0.9 and row["other_ratio"] < 0.1, row


def test_spaces_section_is_on_the_page(report):
    document, html, root = report
    assert '<section id="spaces">' in html and 'href="#spaces"' in html
    assert "average gradient" in html and "Which wp layers" in html
    z_mean = document["spaces"]["spaces"]["z"]["mean"]
    assert f"{z_mean:.3f}" in html
    assert (root / "out" / "figures" / "spaces_cosine.png").stat().st_size > 1000
    assert (root / "out" / "figures" / "spaces_layers.png").stat().st_size > 1000
