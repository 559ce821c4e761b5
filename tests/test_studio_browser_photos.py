"""The studio page's view sliders (StyleGAN3), aligned uploads and translation rows, end to end in
headless Chromium (see test_studio_browser.py for the set-up)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from test_studio_api import small_classifier
from test_studio_browser import browser, open_page, png_pixels, shown_pixels  # noqa: F401 (fixture)
from test_studio_photos import StandIn, needs_dlib, translation_64  # noqa: F401 (fixture)
from test_studio_spaces import NAMES, w_axes
from tlgan.models import load_generator
from tlgan.studio.app import ServerThread, create_app

pytestmark = pytest.mark.browser

torch.set_num_threads(1)


def wait_until(page, predicate: str, timeout_s: float = 20.0) -> None:
    """Poll ``predicate`` (a JS arrow function) until true; the page's CSP forbids wait_for_function's eval."""
    for _ in range(int(timeout_s * 20)):
        if page.evaluate(predicate):
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {predicate}")


def test_the_view_sliders_turn_the_face_without_an_edit(browser, tmp_path):
    from tlgan.models.formats.stylegan3_fixtures import tiny_stylegan3, write_nvlabs_stylegan3_pickle
    from tlgan.models.stylegan3 import input_transform

    pkl = tmp_path / "sg3t.pkl"
    write_nvlabs_stylegan3_pickle(tiny_stylegan3("t"), pkl)
    G = load_generator(str(pkl))
    app = create_app(G, small_classifier(NAMES), w_axes(G))
    with ServerThread(app) as server:
        page, problems = open_page(browser)
        idle = page.locator('body[data-state="idle"]')
        page.goto(f"{server.url}?seed=4")
        idle.wait_for(state="attached")
        edited = page.get_by_alt_text("edited face")
        before = shown_pixels(edited)
        rotate = page.get_by_label("rotate (deg)")
        assert rotate.is_visible() and page.get_by_label("translate x").is_visible()
        rotate.fill("30")
        rotate.dispatch_event("change")
        move = page.get_by_label("translate y")
        move.fill("0.1")
        move.dispatch_event("change")
        idle.wait_for(state="attached")
        wait_until(page, "() => document.getElementById('view-y-value').textContent === '0.10'")
        idle.wait_for(state="attached")
        latent = G.sample_latents_at([4], seed=0, space="w")
        turned = load_generator(str(pkl), input_transform=input_transform(30.0, (0.0, 0.1)))
        with torch.inference_mode():
            want = png_pixels(turned.synthesize(latent, "w")[0])
        after = shown_pixels(edited)
        assert np.array_equal(after, want)
        assert np.abs(after.astype(int) - before).mean() > 2  # a low-contrast random face, clearly turned
        state = page.evaluate("window.tlganStudio.state()")
        assert state["view"] == {"rotate": 30, "translate": [0, 0.1]} and state["amounts"] == {}
        # Undo takes the move back, then the turn.
        page.get_by_role("button", name="Undo").click()
        page.get_by_role("button", name="Undo").click()
        idle.wait_for(state="attached")
        wait_until(page, "() => document.getElementById('view-rotate-value').textContent === '0'")
        idle.wait_for(state="attached")
        assert np.array_equal(shown_pixels(edited), before)
        assert not problems, problems
        page.close()


@needs_dlib
def test_an_aligned_upload_shows_its_face_moves_its_translation_row_and_downloads_the_photo(
    browser,
    translation_64,
    tmp_path,
    monkeypatch,
):
    import tlgan.inversion
    from tlgan.translate import translate

    skimage_data = pytest.importorskip("skimage.data")
    G = load_generator("toyfaces-render")
    axes = G.true_axes()
    model, _ = translation_64
    photo_path = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo_path)
    wall_path = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 240, 3), 128, np.uint8)).save(wall_path)
    stand_in = StandIn(G.sample_latents_at([9], seed=0)[0])
    monkeypatch.setattr(tlgan.inversion, "invert_image", stand_in, raising=False)
    app = create_app(
        G, small_classifier(axes.attributes), axes, align="ffhq", translations={"Smiling translation": model}
    )
    with ServerThread(app) as server:
        page, problems = open_page(browser)
        idle = page.locator('body[data-state="idle"]')
        page.goto(f"{server.url}?seed=1")
        idle.wait_for(state="attached")
        assert not page.get_by_label("rotate (deg)").is_visible()  # no input transform in this generator
        assert not page.get_by_role("button", name="Smiling translation +").is_visible()  # no photo yet

        page.get_by_label("Edit your own photo").set_input_files(str(wall_path))
        page.get_by_text("wall.png: no face found").wait_for()
        idle.wait_for(state="attached")

        page.get_by_label("Edit your own photo").set_input_files(str(photo_path))
        page.get_by_text("Loaded astronaut.png").wait_for()
        idle.wait_for(state="attached")
        aligned = page.get_by_alt_text("aligned face")
        assert aligned.is_visible()
        face = np.asarray(Image.open(io.BytesIO(stand_in.received[-1])).convert("RGB"))
        assert np.array_equal(shown_pixels(aligned), face)

        # The translation row moves the aligned photo itself.
        plus = page.get_by_role("button", name="Smiling translation +")
        assert plus.is_visible()
        plus.click()
        plus.click()
        idle.wait_for(state="attached")
        x = torch.from_numpy(face.copy()).permute(2, 0, 1).float()[None] / 127.5 - 1.0
        with torch.inference_mode():
            want = png_pixels(translate(x, model, 1.0)[0])
        translated = page.get_by_alt_text("translated photo")
        wait_until(
            page,
            "() => document.getElementById('translated').src.startsWith('blob:')"
            " && window.tlganStudio.state().translations['Smiling translation'] === 1",
        )
        for _ in range(50):  # the newest translation may still be on its way
            if np.array_equal(shown_pixels(translated), want):
                break
            page.wait_for_timeout(100)
        assert np.array_equal(shown_pixels(translated), want)

        # The download is the pasted-back photo of the current edit.
        page.get_by_role("button", name="Smiling +", exact=True).click()
        idle.wait_for(state="attached")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download photo with edit").click()
        got = np.asarray(Image.open(download.value.path()).convert("RGB"))
        state = page.evaluate("window.tlganStudio.state()")
        body = {"latent": state["latent"], "amounts": state["amounts"], "locks": []}
        from fastapi.testclient import TestClient

        alignment = TestClient(app).post(
            "/api/invert", files={"file": ("astronaut.png", photo_path.read_bytes(), "image/png")}
        )
        expected = TestClient(app).post(
            "/api/paste-back",
            files={"file": ("astronaut.png", photo_path.read_bytes(), "image/png")},
            data={"request": json.dumps({**body, "alignment": alignment.json()["alignment"]})},
        )
        assert np.array_equal(got, np.asarray(Image.open(io.BytesIO(expected.content)).convert("RGB")))
        assert got.shape == skimage_data.astronaut().shape
        assert state["amounts"] == {"Smiling": 0.5}
        page.close()
    assert not [p for p in problems if "422" not in p], problems  # the no-face upload's 422 is expected
