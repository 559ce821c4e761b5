"""Runs sampled with a CLIP classifier: stored image embeddings (resumable bit for bit, batch-size
independent), attributes in words added afterwards without generating an image, and the CLI
(`tlgan sample / fit --attribute`). A tiny random CLIP saved in transformers' format, loaded
through ``clip:PATH`` with the Hub offline."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from click.testing import CliRunner

from tlgan.errors import TlganError
from tlgan.models import load_classifier, load_generator
from tlgan.sampling import LocalEngine, Run, sample
from tlgan.sampling.run import shard_name
from tlgan.sampling.text_attributes import FILE

pytest.importorskip("transformers")
from test_clip import save_tiny_clip  # noqa: E402

GEN = "toyfaces-gan"
WORDS = {"Cat": {"positive": "a photo of a cat", "negative": "a photo of a dog"}, "Hat": ["hat", "x"]}


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hub-cache")))


@pytest.fixture(scope="module")
def clip_spec(tmp_path_factory):
    return f"clip:{save_tiny_clip(tmp_path_factory.mktemp('tiny-clip'))}"


@pytest.fixture(scope="module")
def models(clip_spec):
    return load_generator(GEN), load_classifier(clip_spec, attributes=WORDS)


def _sample(models, clip_spec, out, n=150, batch=256, **kwargs):
    G, F = models
    return sample(
        G,
        F,
        n,
        out,
        seed=2,
        shard_size=64,
        engine=LocalEngine(batch_size=batch),
        progress=False,
        generator_spec=GEN,
        classifier_spec=clip_spec,
        **kwargs,
    )


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory, models, clip_spec):
    return _sample(models, clip_spec, tmp_path_factory.mktemp("clip") / "run")


def test_run_stores_normalised_embeddings_that_give_its_scores(clip_run, models):
    G, F = models
    manifest = clip_run.manifest
    assert manifest["embeddings"] == {"dim": F.embedding_dim, "dtype": "float16"}
    assert manifest["prompts"] == {a: p.to_json() for a, p in F.prompts.items()}
    emb = clip_run.embeddings()
    assert emb.dtype == torch.float16 and emb.shape == (150, F.embedding_dim)
    assert torch.allclose(emb.float().norm(dim=1), torch.ones(150), atol=2e-3)
    # the same images embedded again, outside the run (float16 rounding apart)
    with torch.no_grad():
        again = F.embed_images(G.synthesize(clip_run.latents()[:64]))
    assert torch.allclose(emb[:64].float(), again, atol=2e-3)
    # scores are the stored embeddings' logits (before float16 rounding, hence the tolerance)
    assert torch.allclose(
        clip_run.scores(), F.logits_from_embeddings(emb), atol=0.05 * F.logit_scale / 100 + 1e-2
    )


def test_interrupted_clip_run_resumes_bit_for_bit(clip_run, models, clip_spec, tmp_path, monkeypatch):
    mod = importlib.import_module("tlgan.sampling.shard")
    real_save, calls = mod.save_tensors, {"n": 0}

    def crashing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(mod, "save_tensors", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        _sample(models, clip_spec, tmp_path / "b", batch=7)
    monkeypatch.setattr(mod, "save_tensors", real_save)
    assert Run.open(tmp_path / "b", require_complete=False).done_shards() == [0]
    _sample(models, clip_spec, tmp_path / "b", batch=33, resume=True)
    for k in range(3):  # other batch sizes, interrupted and resumed: the same bytes
        assert (tmp_path / "b" / shard_name(k)).read_bytes() == (clip_run.path / shard_name(k)).read_bytes()


def test_resuming_with_other_prompts_is_refused(clip_run, models, clip_spec, tmp_path):
    G, F = models
    other = F.with_attributes(["Dog=dog|cat"])
    with pytest.raises(TlganError, match="prompts"):
        sample(
            G,
            other,
            150,
            clip_run.path,
            seed=2,
            shard_size=64,
            resume=True,
            progress=False,
            generator_spec=GEN,
            classifier_spec=clip_spec,
        )


def _fresh_copy(run, tmp_path):
    import shutil

    return Run.open(shutil.copytree(run.path, tmp_path / "copy"))


def test_added_attribute_scores_the_stored_embeddings_without_generating(
    clip_run, models, tmp_path, monkeypatch
):
    G, F = models
    run = _fresh_copy(clip_run, tmp_path)
    monkeypatch.setattr(type(G), "synthesize", lambda *a, **k: pytest.fail("an image was generated"))
    names = run.add_attributes(["Glasses=a person with glasses|a person without glasses", "Beard=beard"], F)
    assert names == ["Glasses", "Beard"] and run.attributes == ["Cat", "Hat", "Glasses", "Beard"]
    scores = run.scores()
    # closed form: logit scale x stored embedding . (positive - negative text embedding)
    with_words = F.with_attributes(["Glasses=a person with glasses|a person without glasses", "Beard=beard"])
    expected = with_words.logits_from_embeddings(run.embeddings())
    assert torch.allclose(scores[:, 2:], expected[:, 2:], atol=1e-5)
    assert torch.equal(scores[:, :2], clip_run.scores())  # the sampled ones untouched
    assert run.prompts()["Beard"] == {"positive": "beard", "negative": "a photo", "templates": []}
    # the run reopened has them; the rebuilt classifier scores images as the run says
    again = Run.open(run.path)
    assert again.attributes == run.attributes
    rebuilt = again.load_classifier()
    assert rebuilt.attributes == tuple(run.attributes)
    monkeypatch.undo()
    with torch.no_grad():
        direct = rebuilt.logits(G.synthesize(run.latents()[:64]))
    assert torch.allclose(direct, scores[:64], atol=0.05)


def test_bad_additions_write_nothing(clip_run, models, tmp_path, tiny_models):
    G, F = models
    run = _fresh_copy(clip_run, tmp_path)
    cases = [
        (["Cat=a cat|a dog"], "already has attribute"),
        (["Hat2= |a dog"], "empty"),
        (["Long=" + " ".join(["photo"] * 40)], "tokens long"),
        (["bad name=cat"], "not usable"),
    ]
    for prompts, message in cases:
        with pytest.raises(TlganError, match=message):
            run.add_attributes(prompts, F)
        assert not (run.path / FILE).exists()
    run.add_attributes(["Dog=dog"], F)
    before = (run.path / FILE).read_bytes()
    with pytest.raises(TlganError, match="already has attribute"):
        run.add_attributes(["Dog=a dog"], F)
    assert (run.path / FILE).read_bytes() == before
    # a run without embeddings says how to get them
    G0, F0, _ = tiny_models
    plain = sample(G0, F0, 10, tmp_path / "plain", progress=False)
    with pytest.raises(TlganError, match="clip:MODEL"):
        plain.add_attributes(["Dog=dog"], F)
    assert not (plain.path / FILE).exists()


def test_fit_attribute_from_the_command_line(clip_spec, tmp_path, monkeypatch):
    from tlgan.axes import FeatureAxes
    from tlgan.cli import cli

    def invoke(*args):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        return result

    out = tmp_path / "run"
    result = invoke(
        "sample",
        "--generator",
        GEN,
        "--classifier",
        clip_spec,
        "-n",
        640,
        "--shard-size",
        256,
        "--attribute",
        "Cat=a photo of a cat|a photo of a dog",
        "--out",
        out,
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["attributes"] == ["Cat"]
    # fit the sampled attribute, then add two in words: merged into the same axes file
    axes_path = tmp_path / "axes.safetensors"
    assert invoke("fit", out, "--out", axes_path, "--method", "logistic").exit_code == 0
    G = load_generator(GEN)
    monkeypatch.setattr(type(G), "synthesize", lambda *a, **k: pytest.fail("an image was generated"))
    result = invoke(
        "fit",
        out,
        "--out",
        axes_path,
        "--attribute",
        "Hat=a person wearing a hat|a person",
        "--attribute",
        "Glasses=glasses",
        "--method",
        "glm",
        "--json",
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["added"] == ["Hat", "Glasses"] and info["attributes"] == ["Cat", "Hat", "Glasses"]
    axes = FeatureAxes.load(axes_path)
    assert axes.attributes == ["Cat", "Hat", "Glasses"] and axes.method == "logistic+glm"
    # the same axis as fitting the run's new column directly (the run now holds it)
    from tlgan.pipeline import fit_axes

    direct = fit_axes(Run.open(out), "glm", attributes=["Hat"])
    assert torch.allclose(direct["Hat"], axes["Hat"], atol=1e-6)
    # a clip: run's glm regresses CLIP's probability, unless the logit is asked for
    from tlgan.axes.finders import make_finder

    latents, scores = Run.open(out).load()
    hat = scores[:, Run.open(out).attributes.index("Hat")][:, None]
    probability = make_finder("glm", target="probability").fit(latents, hat, ["Hat"]).axes_[0]
    assert torch.allclose(direct["Hat"], torch.as_tensor(probability, dtype=torch.float32), atol=1e-6)
    logit = fit_axes(Run.open(out), "glm", attributes=["Hat"], target="logit")["Hat"]
    assert not torch.allclose(logit, direct["Hat"], atol=1e-3)
    # errors: clash with the run, clash with nothing in the run but a bad phrase; nothing written
    before = (axes_path.read_bytes(), (out / FILE).read_bytes())
    for words, message in (("Cat=cat", "already has"), ("Dog=", "empty"), ("Dog=dog|", "empty")):
        result = invoke("fit", out, "--out", axes_path, "--attribute", words)
        assert isinstance(result.exception, TlganError) and message in str(result.exception), result.output
        assert (axes_path.read_bytes(), (out / FILE).read_bytes()) == before
    result = invoke("fit", out, "--out", axes_path, "--attribute", "Dog=dog", "--method", "pca")
    assert isinstance(result.exception, TlganError) and "unsupervised" in str(result.exception)
    # a finder that refuses the new column (this random CLIP puts every face on one side of
    # "glasses"): the run's added attributes are restored, the axes file untouched
    result = invoke("fit", out, "--out", axes_path, "--attribute", "Specs=glasses", "--method", "logistic")
    assert isinstance(result.exception, TlganError) and "both classes" in str(result.exception)
    assert (axes_path.read_bytes(), (out / FILE).read_bytes()) == before
    assert "Specs" not in Run.open(out).attributes
    # --attribute with a classifier that is not CLIP
    result = invoke("sample", "-n", 5, "--out", tmp_path / "x", "--attribute", "Dog=dog")
    assert isinstance(result.exception, TlganError) and "clip:MODEL" in str(result.exception)
    assert not (tmp_path / "x").exists()


@pytest.mark.ray
def test_ray_workers_rebuild_the_clip_and_write_the_same_shards(clip_run, clip_spec, tmp_path):
    """Each worker rebuilds the CLIP classifier from the manifest's spec and prompts."""
    ray = pytest.importorskip("ray")
    import logging

    from tlgan.sampling import RayEngine

    G, F = load_generator(GEN), load_classifier(clip_spec, attributes=WORDS)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        sample(
            G,
            F,
            150,
            tmp_path / "ray",
            seed=2,
            shard_size=64,
            engine=RayEngine(batch_size=16, workers=2),
            progress=False,
            generator_spec=GEN,
            classifier_spec=clip_spec,
        )
    finally:
        ray.shutdown()
    for k in range(3):
        assert (tmp_path / "ray" / shard_name(k)).read_bytes() == (clip_run.path / shard_name(k)).read_bytes()
    manifest = Run.open(tmp_path / "ray").manifest
    assert manifest["engine"] == "ray" and manifest["prompts"] == clip_run.manifest["prompts"]


def test_clip_image_features_are_the_inversion_feature_loss(models, clip_spec, tmp_path):
    """With unit embeddings the feature distance is 2 - 2 cos(image, target); `tlgan invert
    --classifier clip:PATH` (with --attribute, accepted wherever clip: is) uses it."""
    from tlgan.cli import cli
    from tlgan.imaging import save_image
    from tlgan.inversion.losses import feature_distance

    G, F = models
    with torch.no_grad():
        images = G.synthesize(G.sample_latents(4, seed=11))
    targets = images.flip(0)
    expected = 2 - 2 * (F.embed_images(images) * F.embed_images(targets)).sum(1)
    assert torch.allclose(feature_distance(F, images, targets), expected, atol=1e-5)
    save_image(images[0], tmp_path / "face.png")
    args = ["invert", tmp_path / "face.png", "--out", tmp_path / "inv", "--steps", 3, "--json"]
    args += ["--classifier", clip_spec, "--attribute", "Cat=cat|dog"]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["images"][0]["psnr_db"] > 10


def test_report_has_a_section_for_attributes_in_words(models, clip_spec, tmp_path):
    from tlgan.evaluation.report import write_report
    from tlgan.pipeline import fit_axes

    G, F = models
    run = _sample(models, clip_spec, tmp_path / "run", n=640)
    run.add_attributes(["Odd=a <b>cat</b> & x|dog"], F)  # markup in a phrase reaches the page as text
    axes = fit_axes(run, "glm")
    from tlgan.evaluation.measure import fitted_on

    assert fitted_on(axes, run)  # the report reuses them: its glm fits a CLIP run as `tlgan fit` does
    summary = write_report(
        run,
        axes,
        tmp_path / "report",
        generator=G,
        classifier=run.load_classifier(),
        methods=["glm"],
        unsupervised=[],
        edit_faces=0,
        progress=False,
    )
    document = json.loads((tmp_path / "report" / "report.json").read_text())
    rows = {r["name"]: r for r in document["text_attributes"]["attributes"]}
    assert list(rows) == ["Cat", "Hat", "Odd"] and rows["Odd"]["added"] and not rows["Cat"]["added"]
    share = float((run.scores()[:, 2] > 0).float().mean())
    assert rows["Odd"]["positive_share"] == pytest.approx(share, abs=1e-4)
    page = (tmp_path / "report" / "report.html").read_text()
    assert 'id="words"' in page and "a &lt;b&gt;cat&lt;/b&gt; &amp; x" in page and "<b>cat</b>" not in page
    assert summary["outputs"]["html"].endswith("report.html")


def test_every_command_that_takes_clip_takes_attributes_in_words(clip_spec, tmp_path):
    from tlgan.cli import cli

    for name in ("sample", "fit", "edit", "grid", "report", "serve", "invert"):
        params = {p.name for p in cli.commands[name].params}
        assert {"attribute", "attributes_file"} <= params, name
    # --attributes FILE and --attribute together; a name given by both is refused
    words = tmp_path / "words.json"
    words.write_text(
        json.dumps({"Dog": {"positive": "dog", "negative": "cat", "templates": ["a photo of a {}"]}})
    )
    common = [
        "sample",
        "--generator",
        GEN,
        "--classifier",
        clip_spec,
        "-n",
        "64",
        "--shard-size",
        "64",
        "--json",
    ]
    result = CliRunner().invoke(
        cli, [*common, "--out", str(tmp_path / "a"), "--attributes", str(words), "--attribute", "Cat=cat|dog"]
    )
    assert result.exit_code == 0, result.output
    run = Run.open(tmp_path / "a")
    assert run.attributes == ["Dog", "Cat"]  # in the order the options were given
    assert run.prompts()["Dog"]["templates"] == ["a photo of a {}"]
    result = CliRunner().invoke(
        cli, [*common, "--out", str(tmp_path / "b"), "--attributes", str(words), "--attribute", "Dog=dog"]
    )
    assert isinstance(result.exception, TlganError) and "given twice" in str(result.exception)
    assert not (tmp_path / "b").exists()


def test_a_run_sampled_without_attributes_gets_them_later(clip_spec, tmp_path):
    """Sample once (a CLIP with no prompts: embeddings only), ask later."""
    G, bare = load_generator(GEN), load_classifier(clip_spec)
    assert bare.attributes == ()
    run = sample(
        G,
        bare,
        70,
        tmp_path / "run",
        shard_size=64,
        progress=False,
        generator_spec=GEN,
        classifier_spec=clip_spec,
    )
    assert run.attributes == [] and run.scores().shape == (70, 0) and run.embeddings().shape == (70, 16)
    run.add_attributes(["Cat=a photo of a cat|a photo of a dog"])  # the classifier rebuilt from the run
    expected = bare.with_attributes(["Cat=a photo of a cat|a photo of a dog"]).logits_from_embeddings(
        run.embeddings()
    )
    assert run.attributes == ["Cat"] and torch.allclose(run.scores(), expected, atol=1e-5)
