"""The studio page's translation rows work as soon as a photo is loaded, before its inversion
answers, end to end in headless Chromium (see test_studio_browser.py for the set-up).

The inversion is a stand-in that blocks until the test lets it go, so "before" is an order the
test holds, not a race it hopes to win.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from test_studio_api import small_classifier
from test_studio_browser import browser, open_page, png_pixels, shown_pixels  # noqa: F401 (fixture)
from test_studio_browser_photos import wait_until
from test_studio_photos import StandIn, translation_64  # noqa: F401 (fixture)
from tlgan.models import load_generator
from tlgan.studio.app import ServerThread, create_app

pytestmark = pytest.mark.browser

torch.set_num_threads(1)


def test_the_translation_row_moves_the_photo_before_the_inversion_answers(
    browser,
    translation_64,
    tmp_path,
    monkeypatch,
):
    import tlgan.inversion
    from tlgan.editing.edit import edit_latents
    from tlgan.imaging import read_image, to_uint8
    from tlgan.translate import translate

    skimage_data = pytest.importorskip("skimage.data")
    G = load_generator("toyfaces-render")
    axes = G.true_axes()
    model, _ = translation_64
    photo_path = tmp_path / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(photo_path)
    latent = G.sample_latents_at([9], seed=0)[0]
    held = StandIn(latent, release=threading.Event())
    monkeypatch.setattr(tlgan.inversion, "invert_image", held, raising=False)
    app = create_app(G, small_classifier(axes.attributes), axes, translations={"Smiling translation": model})
    face8 = to_uint8(read_image(photo_path.read_bytes(), 64)[0])  # the centre crop the inversion sees
    x = torch.from_numpy(face8.copy()).permute(2, 0, 1).float()[None] / 127.5 - 1.0
    with torch.inference_mode():
        want = png_pixels(translate(x, model, 1.0)[0])
    try:
        with ServerThread(app) as server:
            page, problems = open_page(browser)
            idle = page.locator('body[data-state="idle"]')
            page.goto(f"{server.url}?seed=1")
            idle.wait_for(state="attached")
            plus = page.get_by_role("button", name="Smiling translation +")
            assert not plus.is_visible()  # no photo yet

            page.get_by_label("Edit your own photo").set_input_files(str(photo_path))
            page.get_by_text("astronaut.png is ready for the translation rows").wait_for()
            plus.click()
            plus.click()
            wait_until(
                page,
                "() => document.getElementById('translated').src.startsWith('blob:')"
                " && window.tlganStudio.state().translations['Smiling translation'] === 1",
            )
            translated = page.get_by_alt_text("translated photo")
            for _ in range(50):  # the newest translation may still be on its way
                if np.array_equal(shown_pixels(translated), want):
                    break
                page.wait_for_timeout(100)
            assert np.array_equal(shown_pixels(translated), want)
            # All while the inversion is still held: it has the photo but has not answered.
            assert len(held.received) == 1 and not held.release.is_set()
            assert page.evaluate("window.tlganStudio.state().latent") is None
            assert page.get_by_role("button", name="Smiling +", exact=True).is_disabled()
            assert np.array_equal(shown_pixels(page.get_by_alt_text("original face")), face8)

            # The inversion answers: the latent rows work as before, and the translation stays.
            held.release.set()
            page.get_by_text("Loaded astronaut.png").wait_for()
            idle.wait_for(state="attached")
            state = page.evaluate("window.tlganStudio.state()")
            assert np.allclose(state["latent"], latent.tolist())
            assert state["translations"] == {"Smiling translation": 1}
            with torch.inference_mode():
                reconstruction = png_pixels(G.synthesize(latent[None])[0])
            assert np.array_equal(shown_pixels(page.get_by_alt_text("original face")), reconstruction)
            page.get_by_role("button", name="Smiling +", exact=True).click()
            idle.wait_for(state="attached")
            with torch.inference_mode():
                expected = png_pixels(G.synthesize(edit_latents(latent, axes, {"Smiling": 0.5})[None])[0])
            assert np.array_equal(shown_pixels(page.get_by_alt_text("edited face")), expected)
            assert np.array_equal(shown_pixels(translated), want)
            # Undo goes back through the face's states: each has the latent now.
            page.get_by_role("button", name="Undo").click()
            idle.wait_for(state="attached")
            assert page.evaluate("window.tlganStudio.state().latent") is not None
            assert np.array_equal(shown_pixels(page.get_by_alt_text("edited face")), reconstruction)
            assert not problems, problems
            page.close()
    finally:
        held.release.set()
