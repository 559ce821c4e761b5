"""The CLI chain end to end on tiny settings: sample -> fit -> edit / grid, plus its error messages."""

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tlgan.cli import cli
from tlgan.editing.latent_file import save_latent

pytestmark = pytest.mark.usefixtures("one_thread")


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    return result


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chain")
    run = tmp / "run"
    r = invoke(
        "sample", "--generator", "toyfaces-render", "-n", 600, "--out", run, "--shard-size", 256, "--json"
    )
    assert r.exit_code == 0, r.output
    axes = tmp / "axes.safetensors"
    r = invoke(
        "fit", run, "--method", "logistic", "--out", axes, "--json", "--export-boundaries", tmp / "bounds"
    )
    assert r.exit_code == 0, r.output
    return tmp, run, axes, json.loads(r.output)


def test_fit_reports_cosine_to_truth(chain):
    _, _, _, fitted = chain
    cos = {a: m["cosine_to_truth"] for a, m in fitted["axes"].items()}
    assert len(cos) == 17
    # 600 samples is little for 512 dimensions; strong attributes are already well aligned.
    assert cos["Male"] > 0.6 and sum(cos.values()) / len(cos) > 0.4


def test_edit_and_grid_write_images(chain):
    tmp, _, axes, _ = chain
    out = tmp / "edit.png"
    r = invoke(
        "edit",
        "--generator",
        "toyfaces-render",
        "--axes",
        axes,
        "--seed",
        3,
        "--attr",
        "Smiling=+2",
        "--attr",
        "Beard=-1.5",
        "--lock",
        "Male",
        "--out",
        out,
        "--upscale",
        1,
        "--save-latent",
        tmp / "edited.safetensors",
    )
    assert r.exit_code == 0, r.output
    assert Image.open(out).size == (64, 64)
    plain = tmp / "plain.png"
    invoke(
        "edit",
        "--generator",
        "toyfaces-render",
        "--axes",
        axes,
        "--seed",
        3,
        "--attr",
        "Smiling=0",
        "--out",
        plain,
        "--upscale",
        1,
    )
    assert Image.open(out).tobytes() != Image.open(plain).tobytes()
    grid = tmp / "grid.png"
    r = invoke(
        "grid",
        "--generator",
        "toyfaces-render",
        "--axes",
        axes,
        "--latent",
        tmp / "edited.safetensors",
        "--attrs",
        "Smiling,Young",
        "--steps",
        "-2,0,2",
        "--out",
        grid,
        "--gif",
        tmp / "a.gif",
        "--upscale",
        1,
    )
    assert r.exit_code == 0, r.output
    assert Image.open(grid).size == (3 * 64, 2 * 64)
    assert Image.open(tmp / "a.gif").n_frames > 10


def test_bad_input_is_named(chain, tmp_path):
    tmp, run, axes, _ = chain
    common = ["--generator", "toyfaces-render", "--axes", axes, "--out", tmp_path / "x.png"]
    r = invoke("edit", *common, "--attr", "Smilling=+1")
    assert r.exit_code != 0 and "did you mean 'Smiling'" in str(r.exception or r.output)
    r = invoke("edit", *common, "--attr", "Smiling")
    assert "NAME=AMOUNT" in str(r.exception or r.output)
    save_latent(tmp_path / "short.safetensors", torch.zeros(100), generator="toyfaces-render")
    r = invoke("edit", *common, "--attr", "Smiling=1", "--latent", tmp_path / "short.safetensors")
    assert "size 512" in str(r.exception or r.output)
    r = invoke("sample", "--generator", "toyfaces-rendr", "-n", 5, "--out", tmp_path / "r")
    assert "did you mean 'toyfaces-render'" in str(r.exception or r.output)
    r = invoke(
        "edit", "--generator", "toyfaces-gan", "--axes", axes, "--out", tmp_path / "x.png", "--attr", "Male=1"
    )
    assert "fitted for generator 'toyfaces-render'" in str(r.exception or r.output)
    r = invoke("sample", "--generator", "toyfaces-render", "-n", 600, "--out", run)
    assert "--resume" in str(r.exception or r.output)
    (tmp_path / "empty").mkdir()
    r = invoke("fit", tmp_path / "empty", "--out", tmp_path / "a.safetensors")
    assert "not a run folder" in str(r.exception or r.output)


def test_fit_defaults_to_the_spaces_finder_with_integer_counts(chain):
    tmp, run, _, _ = chain
    r = invoke("fit", run, "--out", tmp / "default.safetensors", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["method"] == "glm"  # default_method("z")
    r = invoke("fit", run, "--method", "logistic", "--out", tmp / "logistic.safetensors", "--json")
    assert r.exit_code == 0, r.output
    fitted = json.loads(r.output)
    assert fitted["axes"]["Male"]["n_train"] == 480 and isinstance(fitted["axes"]["Male"]["n_train"], int)
    r = invoke("fit", run, "--method", "glm", "--out", tmp / "glm.safetensors")
    assert r.exit_code == 0, r.output
    assert "n_samples=600" in r.output and "n_samples=600.0" not in r.output


def test_fit_pca_on_isotropic_z_says_it_finds_nothing_and_sefa_explains(chain):
    tmp, run, _, _ = chain
    r = invoke("fit", run, "--method", "pca", "--n-components", 8, "--out", tmp / "pca.safetensors")
    assert r.exit_code == 0, r.output
    assert "wrote 8 axes (pca)" in r.output and "no structure" in r.output and "pc7" in r.output
    r = invoke("fit", run, "--method", "sefa", "--out", tmp / "sefa.safetensors")
    assert r.exit_code != 0 and "analytic renderer with no weights" in str(r.exception or r.output)


def test_fit_sefa_names_directions_and_name_directions_command(tmp_path):
    run = tmp_path / "gan"
    r = invoke("sample", "--generator", "toyfaces-gan", "-n", 64, "--out", run, "--json")
    assert r.exit_code == 0, r.output
    r = invoke(
        "fit",
        run,
        "--method",
        "sefa",
        "--n-components",
        4,
        "--name-directions",
        "--faces",
        8,
        "--out",
        tmp_path / "sefa.safetensors",
        "--json",
    )
    assert r.exit_code == 0, r.output
    fitted = json.loads(r.output)
    table = fitted["naming"]["components"]
    assert list(table) == ["pc0", "pc1", "pc2", "pc3"] and fitted["naming"]["faces"] == 8
    for name, entry in table.items():
        assert entry["label"].startswith(name) and 0 <= entry["purity"] <= 1
        assert (entry["attribute"] is None) == entry["label"].endswith("moves no attribute")
    r = invoke("fit", run, "--method", "pca", "--n-components", 3, "--out", tmp_path / "pca.safetensors")
    assert r.exit_code == 0, r.output
    r = invoke("name-directions", tmp_path / "pca.safetensors", "--run", run, "--faces", 4, "--no-rename")
    assert r.exit_code == 0, r.output
    from tlgan.axes import FeatureAxes

    named = FeatureAxes.load(tmp_path / "pca.named.safetensors")
    assert named.attributes == ["pc0", "pc1", "pc2"] and set(named.info["naming"]["components"]) == set(
        named.attributes
    )
    assert "pc0" in r.output
    r = invoke("fit", run, "--method", "glm", "--name-directions", "--out", tmp_path / "x.safetensors")
    assert r.exit_code != 0 and "already named" in str(r.exception or r.output)


def test_bench_help_names_every_section_it_runs():
    from tlgan.bench.runner import SECTIONS

    result = CliRunner().invoke(cli, ["bench", "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    listed = " ".join(result.output.split()).split("Comma-separated sections (")[1].split(")")[0]
    assert [s.strip() for s in listed.split(",")] == list(SECTIONS)
