"""Rows from words in the studio (`tlgan serve --run RUN` on a CLIP run): the API and the page.

The run: 1,024 faces of the analytic toyfaces renderer (which knows its true axes) scored by the
bundled toyfaces-clip, which reads beards well (BENCHMARKS.md). A beard described in words must
give an axis close to the renderer's true Beard axis, and moving a face along it must raise
P(Beard) of the classifier.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("transformers")
from fastapi.testclient import TestClient  # noqa: E402

from tlgan.models import load_classifier, load_generator  # noqa: E402
from tlgan.sampling import LocalEngine, sample  # noqa: E402

GEN = "toyfaces-render"
BEARD = {"positive": "a photo of a bearded person", "negative": "a photo of a person without a beard"}
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    G, F = load_generator(GEN), load_classifier("clip:")
    out = tmp_path_factory.mktemp("words") / "run"
    sample(
        G,
        F,
        1024,
        out,
        shard_size=512,
        progress=False,
        generator_spec=GEN,
        classifier_spec="clip:",
        engine=LocalEngine(threads=1),
    )
    torch.set_num_threads(before)
    return out


@pytest.fixture(scope="module")
def app(clip_run):
    from tlgan.studio.words import app_from_run

    return app_from_run(clip_run, max_batch=1)


def _truth(name):
    return load_generator(GEN).true_axes(space="z")[name]


def test_a_phrase_becomes_a_row_close_to_the_true_axis(app, clip_run):
    client = TestClient(app)
    status = client.get("/api/words").json()
    assert status == {"enabled": True, "reason": "", "samples": 1024}
    before = client.get("/api/attributes").json()
    answer = client.post("/api/words", json=BEARD)
    assert answer.status_code == 200, answer.text
    added = answer.json()
    assert added["name"] == "Bearded" and added["seconds"] > 0
    after = client.get("/api/attributes").json()
    names = [a["name"] for a in after["attributes"]]
    assert names == [a["name"] for a in before["attributes"]] + ["Bearded"]
    assert after["attributes"][-1]["scored"] and "Bearded" in after["scored_attributes"]
    # planted truth: a random 512-d direction would have |cos| about 0.04
    axis = app.state.studio.axes["Bearded"]
    assert float(axis @ _truth("Beard")) > 0.5
    # the row moves the face: the classifier's P(Bearded) and P(Beard) both rise, and it locks
    seed = 3
    base = client.post("/api/probabilities", json={"seed": seed}).json()["probabilities"]
    moved = client.post("/api/probabilities", json={"seed": seed, "amounts": {"Bearded": 3}}).json()
    assert moved["probabilities"]["Bearded"] > base["Bearded"] + 0.1
    assert moved["probabilities"]["Beard"] > base["Beard"] + 0.1
    locked = client.post(
        "/api/render", json={"seed": seed, "amounts": {"Beard": 2}, "locks": ["Bearded"], "scores": True}
    )
    assert locked.status_code == 200, locked.text
    # the run folder is not changed by the studio
    assert not (clip_run / "text_attributes.safetensors").exists()


def test_bad_phrases_are_refused_and_add_nothing(app):
    client = TestClient(app)
    rows = client.get("/api/attributes").json()["attributes"]
    for body, message in (
        ({"positive": "  "}, "empty"),
        ({"positive": " ".join(["beard"] * 90)}, "tokens long"),
        ({"positive": "a smiling person", "name": "Male"}, "already has a row"),
        ({"positive": "a smiling person", "name": "bad name"}, "not usable"),
    ):
        answer = client.post("/api/words", json=body)
        assert answer.status_code == 422 and message in answer.json()["detail"], answer.text
    assert client.get("/api/attributes").json()["attributes"] == rows


def test_a_run_without_embeddings_says_how_to_get_them(tmp_path):
    from tlgan.studio.words import app_from_run

    G, F = load_generator(GEN), load_classifier("toyfaces-classifier")
    sample(
        G,
        F,
        600,
        tmp_path / "plain",
        shard_size=600,
        progress=False,
        generator_spec=GEN,
        classifier_spec="toyfaces-classifier",
    )
    client = TestClient(app_from_run(tmp_path / "plain", max_batch=1))
    status = client.get("/api/words").json()
    assert not status["enabled"] and "clip:MODEL" in status["reason"]
    answer = client.post("/api/words", json=BEARD)
    assert answer.status_code == 422 and "clip:MODEL" in answer.json()["detail"]


@pytest.mark.browser
def test_the_page_adds_a_row_from_words(app):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from tlgan.studio.app import ServerThread

    with ServerThread(app) as server, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(viewport={"width": 1320, "height": 900})
        problems = []
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)

        def idle():
            page.locator('body[data-state="idle"]').wait_for(state="attached", timeout=30_000)

        # a face whose hat score +2 along the axis crosses the boundary (seed 3's stays far below
        # it, and its P(Hat) rounds to 0.0001 on the meter before and after)
        page.goto(f"{server.url}?seed=5")
        idle()
        page.get_by_label("Looks like").fill("a photo of a person with a hat")
        page.get_by_label("Opposite").fill("a photo of a person without a hat")
        page.get_by_role("button", name="Add", exact=True).click()
        plus = page.get_by_role("button", name="Hat +", exact=True)
        plus.wait_for(timeout=30_000)
        assert "Added Hat in" in page.get_by_role("status").filter(has_text="Added").inner_text()
        idle()
        meter = page.locator('[role="meter"][aria-label="Hat score"]')
        start = float(meter.get_attribute("aria-valuenow"))
        for _ in range(4):
            plus.click()
            idle()
        assert float(
            page.get_by_role("slider", name="Hat amount", exact=True).input_value()
        ) == pytest.approx(2.0)
        assert float(meter.get_attribute("aria-valuenow")) > max(start, 0.5)
        page.get_by_role("checkbox", name="lock Hat", exact=True).check()
        idle()
        assert plus.is_disabled()
        assert page.get_by_role("alert").is_hidden() and not problems, problems
        browser.close()


def test_the_demo_knob_from_words_finds_the_glasses_axis(tmp_path):
    """`tlgan demo`'s section: a phrase -> an axis (close to the world's true Eyeglasses axis) -> a grid."""
    from PIL import Image

    from tlgan.toyfaces.words_demo import STEPS, words_demo

    G = load_generator(GEN)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = words_demo(tmp_path, G, GEN, n=1000, progress=False)
    finally:
        torch.set_num_threads(before)
    assert result["samples"] == 1000 and result["cosine_to_truth"] > 0.4  # random: about 0.04
    grid = Image.open(tmp_path / result["outputs"]["grid"])
    assert grid.size == (2 * 64 * len(STEPS), 2 * 64)
    again = words_demo(tmp_path, G, GEN, n=1000, progress=False)  # resumes: the same axis
    assert again["cosine_to_truth"] == result["cosine_to_truth"]
