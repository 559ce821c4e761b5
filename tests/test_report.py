"""The evaluation report end to end: API, files, CLI, and rendering in a headless browser."""

import base64
import json
import re
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tlgan.errors import TlganError
from tlgan.evaluation.metrics import label_correlation
from tlgan.models import load_classifier, load_generator
from tlgan.sampling import sample

torch.set_num_threads(1)

# A tiny world whose generator knows its true axes; written to a file so that the run can name
# its models by spec (path/to/file.py:factory) and `tlgan report` can load them again.
MODELS_SOURCE = textwrap.dedent("""
    import torch
    from tlgan.axes import FeatureAxes
    from tlgan.models.base import Classifier, Generator

    SIDE = 2
    DIM = 3 * SIDE * SIDE
    NAMES = ["Male", "Beard", "Smiling", "Young"]
    BIAS = [0.0, -1.0, 0.0, 0.7]


    def directions():
        rows = torch.zeros(4, DIM)
        rows[0, 0] = 1.0                       # Male
        rows[1, 0], rows[1, 1] = 0.85, 0.527   # Beard leans on Male
        rows[2, 2] = 1.0                       # Smiling
        rows[3, 0], rows[3, 3] = -0.3, 0.95    # Young leans a little on -Male
        return torch.nn.functional.normalize(rows, dim=1)


    class PixelGenerator(Generator):
        name = "pixel-world"
        z_dim = DIM
        img_resolution = SIDE

        def _synthesize(self, latents, space):
            return (latents / 8.0).reshape(-1, 3, SIDE, SIDE)

        def true_axes(self, attributes=None, space="z"):
            axes = FeatureAxes(directions(), NAMES, space="z", generator=self.name, method="truth")
            return axes.subset(attributes) if attributes else axes


    class ProjectionClassifier(Classifier):
        name = "pixel-reader"
        attributes = tuple(NAMES)
        input_resolution = SIDE

        def __init__(self):
            super().__init__()
            self.register_buffer("weight", directions())
            self.register_buffer("bias", torch.tensor(BIAS))

        def _logits(self, images):
            z = images.reshape(len(images), -1) * 8.0
            return 4.0 * (z @ self.weight.T + self.bias)


    def make_generator():
        return PixelGenerator()


    def make_classifier():
        return ProjectionClassifier()
""")

SECTIONS = (
    "overview",
    "separability",
    "geometry",
    "correlations",
    "edits",
    "truth",
    "methods",
    "unsupervised",
    "definitions",
)
N_SAMPLES = 3000


def write_celeba_labels(root: Path, seed: int = 0, n: int = 400) -> torch.Tensor:
    """A CelebA-layout attribute file (no images needed for the correlations), columns in another order."""
    g = torch.Generator().manual_seed(seed)
    male = torch.rand(n, generator=g) < 0.45
    beard = male & (torch.rand(n, generator=g) < 0.4)
    smiling = torch.rand(n, generator=g) < 0.5
    glasses = torch.rand(n, generator=g) < 0.1
    young = torch.rand(n, generator=g) < 0.7
    table = torch.stack([smiling, glasses, male, young, beard], dim=1)
    (root / "img_align_celeba").mkdir(parents=True)
    lines = [str(n), "Smiling Eyeglasses Male Young Beard"]
    for i in range(n):
        lines.append(f"{i + 1:06d}.png  " + " ".join("1" if v else "-1" for v in table[i].tolist()))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return torch.stack([male, beard, smiling, young], dim=1)  # in the generator's attribute order


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A sampled run, axes fitted on it, a labelled folder, and the report written once for all tests."""
    from tlgan.evaluation.report import write_report
    from tlgan.pipeline import fit_axes

    root = tmp_path_factory.mktemp("report")
    models = root / "pixel_models.py"
    models.write_text(MODELS_SOURCE)
    gen_spec, clf_spec = f"{models}:make_generator", f"{models}:make_classifier"
    G, F = load_generator(gen_spec), load_classifier(clf_spec)
    run = sample(
        G,
        F,
        N_SAMPLES,
        root / "run",
        seed=0,
        shard_size=1000,
        progress=False,
        generator_spec=gen_spec,
        classifier_spec=clf_spec,
    )
    axes = fit_axes(run, "glm")
    axes.save(root / "axes.safetensors")
    data_labels = write_celeba_labels(root / "celeba")
    summary = write_report(
        run,
        axes,
        root / "out",
        locks=["Male"],
        data=root / "celeba",
        edit_faces=32,
        progress=False,
        lock_demo=("Beard", "Male"),
    )
    return {
        "root": root,
        "run": run,
        "axes": axes,
        "G": G,
        "F": F,
        "summary": summary,
        "gen_spec": gen_spec,
        "data_labels": data_labels,
    }


def test_report_summary_numbers(world):
    s = world["summary"]
    names = ["Male", "Beard", "Smiling", "Young"]
    assert list(s["separability"]) == names
    # logits are exactly linear in z: the top/bottom samples are perfectly separable
    assert all(v > 0.97 for v in s["separability"].values())
    # the glm axes recover the planted directions
    assert all(v > 0.999 for v in s["cosine_to_truth"].values())
    # Beard leans on Male: locking Male removes Beard's side effect on Male
    assert s["entanglement"]["Beard"]["ratio"] > 0.3 > s["entanglement"]["Beard"]["ratio_locked"]
    assert s["entanglement"]["Male"]["ratio_locked"] is None  # a locked axis is not edited with locks
    # z is isotropic: PCA of it must say it found nothing; the pixel generator has no weight for SeFa
    assert s["unsupervised"]["pca"]["isotropic"] is True
    assert (
        s["unsupervised"]["sefa"]["available"] is False
        and "latent_weight" in s["unsupervised"]["sefa"]["reason"]
    )
    assert s["entanglement"]["Smiling"]["ratio"] < 0.02  # orthogonal to everything
    beard = s["male_change_beard_minus"]
    assert beard["unlocked"] < -0.05 and abs(beard["locked"]) < 0.01 and beard["at_least_halved"]
    assert s["seconds"] > 0


def test_report_json_matches_inputs(world):
    out = world["root"] / "out"
    report = json.loads(
        (out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}")
    )
    assert report["format"] == "tlgan.report/1" and report["context"]["run"]["n"] == N_SAMPLES
    _, scores = world["run"].load()
    # correlations: generated vs the labelled folder, on the shared attributes, in the generated order
    cor = report["correlations"]
    assert cor["common_attributes"] == ["Male", "Beard", "Smiling", "Young"]
    expected_gen = label_correlation(scores > 0)
    expected_data = label_correlation(world["data_labels"])
    assert torch.allclose(torch.tensor(cor["generated"]), expected_gen, atol=1e-4)
    assert torch.allclose(torch.tensor(cor["data"]), expected_data, atol=1e-4)
    diff = (expected_gen - expected_data).abs()
    off = ~torch.eye(4, dtype=torch.bool)
    assert cor["mean_abs_difference"] == pytest.approx(float(diff[off].mean()), abs=1e-4)
    # geometry: the axes under test, before and after locking Male
    before = torch.tensor(report["geometry"]["before"])
    assert torch.allclose(before, world["axes"].vectors @ world["axes"].vectors.T, atol=1e-4)
    assert abs(report["geometry"]["after"][1][0]) < 1e-4
    # learning curve: sub-samples capped at the run size, all three methods close to the truth at full size
    curve = report["ground_truth"]["learning_curve"]
    assert curve["sizes"] == [1000, N_SAMPLES]
    for method in ("glm", "logistic", "svm"):
        assert curve["methods"][method]["mean"][-1] > 0.95, method
    assert set(report["methods"]["cosine"]) == {"glm~logistic", "glm~svm", "logistic~svm"}
    assert report["summary"]["separability"] == world["summary"]["separability"]


def test_report_html_is_self_contained_with_figures(world):
    out = world["root"] / "out"
    page = (out / "report.html").read_text()
    for anchor in SECTIONS:
        assert f'id="{anchor}"' in page and f'href="#{anchor}"' in page
    assert "pca (latent) finds nothing here" in page
    assert "glm (probability target)" in page  # TL-GAN's own target in the learning curve
    # nothing is fetched from elsewhere: no external URLs, scripts or stylesheets
    assert not re.search(r'(src|href)="(https?:|//)', page)
    assert "<script" not in page and "<link" not in page
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    for name in (
        "separability.png",
        "cosine_before.png",
        "cosine_after.png",
        "correlation_generated.png",
        "correlation_data.png",
        "correlation_difference.png",
        "entanglement.png",
        "edit_grid.png",
        "edit_grid_locked.png",
        "beard_minus_lock_male.png",
        "learning_curve.png",
        "method_angles.png",
    ):
        assert name in figures
    assert len(embedded) == len(figures)
    for data in embedded:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.rglob("*.tmp"))


def test_report_without_truth_data_or_locks(world, tmp_path):
    """A generator that does not know its axes, no --data, no locks: those parts are left out."""
    from tlgan.evaluation.report import write_report

    class Blind(type(world["G"])):
        def true_axes(self, attributes=None, space="z"):
            return None

    summary = write_report(
        world["run"],
        world["axes"],
        tmp_path,
        generator=Blind(),
        classifier=world["F"],
        methods=("glm",),
        edit_faces=8,
        steps=(1.5,),
        progress=False,
    )
    page = (tmp_path / "report.html").read_text()
    assert 'id="truth"' not in page and "cosine_to_truth" not in summary
    assert "correlation_mean_abs_difference" not in summary
    assert not (tmp_path / "figures" / "cosine_after.png").exists()
    # without locks the locked ratio is the unlocked one (nothing was locked)
    assert all(v["ratio_locked"] == v["ratio"] for v in summary["entanglement"].values())
    with pytest.raises(TlganError, match="unknown axis finder"):
        write_report(
            world["run"],
            world["axes"],
            tmp_path,
            generator=Blind(),
            classifier=world["F"],
            methods=("glmm",),
            progress=False,
        )
    with pytest.raises(TlganError, match="'sefa' finds unsupervised components"):
        write_report(
            world["run"],
            world["axes"],
            tmp_path,
            generator=Blind(),
            classifier=world["F"],
            methods=("glm", "sefa"),
            progress=False,
        )
    with pytest.raises(TlganError, match="unknown axis finder 'pcaa'"):
        write_report(
            world["run"],
            world["axes"],
            tmp_path,
            generator=Blind(),
            classifier=world["F"],
            unsupervised=("pcaa",),
            progress=False,
        )
    with pytest.raises(TlganError, match="did you mean 'Male'"):
        write_report(
            world["run"],
            world["axes"],
            tmp_path,
            generator=Blind(),
            classifier=world["F"],
            locks=["male"],
            progress=False,
        )


def test_axes_fitted_on_the_run_are_reused_not_refitted(world, monkeypatch):
    from tlgan.axes.finders import make_finder
    from tlgan.evaluation.measure import fitted_on as _fitted_on

    axes, run = world["axes"], world["run"]
    assert _fitted_on(axes, run)  # fit_axes(run, "glm") with default options
    changed = type(axes)(
        axes.vectors, axes.attributes, generator=axes.generator, method="glm", info={**axes.info, "clip": 3.0}
    )
    assert not _fitted_on(changed, run)  # other finder options: refitting would give other axes
    other_run = type(axes)(axes.vectors, axes.attributes, method="glm", info={**axes.info, "n": 10})
    assert not _fitted_on(other_run, run)
    refit = make_finder("glm").fit(*run.load(), run.attributes).to_feature_axes(run.attributes)
    assert torch.allclose(refit.vectors, axes.vectors, atol=1e-6)


def test_report_survives_a_finder_that_cannot_fit(world, tmp_path):
    """Young is always present here: logistic regression refuses it; the report says so and goes on."""
    from tlgan.evaluation.report import write_report

    G, F = world["G"], type(world["F"])()
    F.bias[3] = 10.0
    run = sample(
        G,
        F,
        1500,
        tmp_path / "run",
        seed=1,
        progress=False,
        generator_spec=world["gen_spec"],
        classifier_spec="always-young",
    )
    from tlgan.pipeline import fit_axes

    axes = fit_axes(run, "svm")
    summary = write_report(
        run,
        axes,
        tmp_path / "out",
        generator=G,
        classifier=F,
        methods=("logistic", "svm"),
        edit_faces=4,
        progress=False,
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "logistic" in report["methods"]["errors"] and report["methods"]["methods"] == ["svm"]
    assert summary["separability"]["Male"] > 0.9
    assert "could not be fitted" in (tmp_path / "out" / "report.html").read_text()

    # too few samples for the SVM's top/bottom 2 %: no separability, the rest of the report still comes out
    small = sample(
        G,
        world["F"],
        60,
        tmp_path / "small",
        seed=2,
        progress=False,
        generator_spec=world["gen_spec"],
        classifier_spec="pixel-reader",
    )
    summary = write_report(
        small,
        fit_axes(small, "glm"),
        tmp_path / "small_out",
        generator=G,
        classifier=world["F"],
        methods=("glm",),
        edit_faces=4,
        progress=False,
    )
    assert all(v is None for v in summary["separability"].values())
    assert "the SVM finder could not be fitted" in (tmp_path / "small_out" / "report.html").read_text()


def test_report_escapes_names_that_hold_markup(world, tmp_path):
    """Names reach the page as text: an attribute and a generator spec holding a script are escaped."""
    from tlgan.evaluation.report import write_report
    from tlgan.pipeline import fit_axes

    hostile = "<script>alert(1)</script>"

    class HostileReader(type(world["F"])):
        attributes = ("Male", f"Beard{hostile}", "Smiling", "Young")

    F = HostileReader()
    run = sample(
        world["G"],
        F,
        600,
        tmp_path / "run",
        seed=3,
        progress=False,
        generator_spec=f"gen{hostile}",
        classifier_spec="reader",
    )
    write_report(
        run,
        fit_axes(run, "glm"),
        tmp_path / "out",
        locks=[f"Beard{hostile}"],
        generator=world["G"],
        classifier=F,
        methods=("glm",),
        unsupervised=(),
        edit_faces=4,
        progress=False,
    )
    page = (tmp_path / "out" / "report.html").read_text()
    assert "<script" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"<code>gen{escaped}</code>" in page  # the generator row
    assert f"<td>Beard{escaped}</td>" in page  # the separability table
    assert f"<td>locked attributes</td><td>Beard{escaped}</td>" in page


def test_cli_report_json_and_wrong_axes(world, tmp_path):
    from tlgan.axes import FeatureAxes
    from tlgan.cli.report import report_cmd

    root = world["root"]
    runner = CliRunner()
    result = runner.invoke(
        report_cmd,
        [
            str(root / "run"),
            "--axes",
            str(root / "axes.safetensors"),
            "--lock",
            "Male",
            "--methods",
            "glm,svm",
            "--edit-faces",
            "8",
            "--out",
            str(tmp_path / "r"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["entanglement"]["Beard"]["ratio_locked"] < summary["entanglement"]["Beard"]["ratio"]
    # the CLI passes the toyfaces pair by default: Beard and Male are axes here, so the demo is in
    assert summary["male_change_beard_minus"]["unlocked"] < -0.05
    assert (tmp_path / "r" / "report.html").is_file() and (tmp_path / "r" / "report.json").is_file()

    # axes of another generator are refused, naming both
    other = FeatureAxes(world["axes"].vectors, world["axes"].attributes, generator="toyfaces-gan")
    other.save(tmp_path / "other.safetensors")
    result = runner.invoke(
        report_cmd,
        [str(root / "run"), "--axes", str(tmp_path / "other.safetensors"), "--out", str(tmp_path / "x")],
    )
    assert isinstance(result.exception, TlganError) and "toyfaces-gan" in str(result.exception)
    result = runner.invoke(
        report_cmd,
        [
            str(root / "run"),
            "--axes",
            str(root / "axes.safetensors"),
            "--steps",
            "a,b",
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert isinstance(result.exception, TlganError) and "--steps" in str(result.exception)
    result = runner.invoke(
        report_cmd,
        [str(root / "run"), "--axes", str(root / "axes.safetensors"), "--lock-demo", "Beard", "--out", "x"],
    )
    assert isinstance(result.exception, TlganError) and "--lock-demo takes two" in str(result.exception)


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
def test_report_renders_in_headless_chromium(world):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    page_path = world["root"] / "out" / "report.html"
    problems = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on(
                "request",
                lambda req: (
                    problems.append(f"request {req.url}")
                    if not req.url.startswith(("file:", "data:"))
                    else None
                ),
            )
            page.goto(page_path.as_uri())
            page.wait_for_load_state("load")
            images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
            assert images and all(done and width > 0 for done, width in images)
            links = page.eval_on_selector_all("nav.toc a", "els => els.map(e => e.getAttribute('href'))")
            assert links == [f"#{a}" for a in SECTIONS]
            for href in links:
                assert page.locator(href).count() == 1
            assert "tlgan report" in page.title()
            page.screenshot(path=str(world["root"] / "report.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
