"""The studio page end to end: a real uvicorn server, headless Chromium driven by Playwright.

The face comes from the analytic toyfaces renderer with its true axes. The classifier is
the bundled one when it is installed; otherwise a ridge read-out of pooled pixels fitted
here on a few hundred renders, which reads Smiling, Male and Beard from the image well
enough (about 0.9 accuracy) for the checks below to mean something.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tlgan.errors import TlganError
from tlgan.io import atomic_path
from tlgan.models import ModuleClassifier, load_classifier, load_generator
from tlgan.studio.app import ServerThread, create_app

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "studio.png"
MINUS = "\u2212"

pytestmark = pytest.mark.browser

torch.set_num_threads(1)


def ridge_classifier(generator, n: int = 512, pool: int = 16, seed: int = 99) -> ModuleClassifier:
    """Linear read-out of (pool x pool) average-pooled renders, fitted by ridge regression to 2 x latent scores."""
    from tlgan.toyfaces import world

    z = generator.sample_latents(n, seed=seed)
    with torch.inference_mode():
        x = torch.nn.functional.adaptive_avg_pool2d(generator.synthesize(z), pool).flatten(1).double()
    y = 2.0 * world.latent_scores(z).double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    ridge = 1e-3 * xc.pow(2).sum() / x.shape[1]
    w = torch.linalg.solve(xc.T @ xc + ridge * torch.eye(x.shape[1], dtype=torch.float64), xc.T @ yc)
    net = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(pool), torch.nn.Flatten(), torch.nn.Linear(3 * pool * pool, y.shape[1])
    )
    with torch.no_grad():
        net[2].weight.copy_(w.T.float())
        net[2].bias.copy_((my - mx @ w).float())
    return ModuleClassifier(net, world.ATTRIBUTES, name="ridge-readout").eval()


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
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
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def studio():
    G = load_generator("toyfaces-render")
    try:
        F = load_classifier("toyfaces-classifier")
    except TlganError:
        F = ridge_classifier(G)
    axes = G.true_axes()
    with ServerThread(create_app(G, F, axes, generator_name="toyfaces-render")) as server:
        yield server, G, axes


def bearded_man(generator, limit: int = 500) -> int:
    """The first seed whose true labels are Male and Beard and not Smiling (so every move has work to do),
    with a Male score close enough to the threshold that "Beard −" without a lock can flip it."""
    from tlgan.toyfaces import world

    z = generator.sample_latents_at(range(limit), seed=0)
    labels, scores = world.labels(z), world.latent_scores(z)
    col = {a: world.ATTRIBUTES.index(a) for a in ("Male", "Beard", "Smiling")}
    for seed in range(limit):
        if (
            labels[seed, col["Male"]]
            and labels[seed, col["Beard"]]
            and not labels[seed, col["Smiling"]]
            and scores[seed, col["Male"]] < 0.8
            and scores[seed, col["Smiling"]] > -1.0
        ):
            return seed
    raise AssertionError("no bearded man among the first seeds")


def shown_pixels(image) -> np.ndarray:
    """The RGB pixels an <img> shows, at its natural size, read back through a canvas."""
    shown = image.evaluate("""async img => {
        await img.decode();  // the bytes may still be decoding right after the page went idle
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth;
        canvas.height = img.naturalHeight;
        const context = canvas.getContext("2d");
        context.drawImage(img, 0, 0);
        return {w: canvas.width, h: canvas.height,
                data: Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data)};
    }""")
    return np.asarray(shown["data"], dtype=np.uint8).reshape(shown["h"], shown["w"], 4)[..., :3]


def png_pixels(image: torch.Tensor) -> np.ndarray:
    """The RGB pixels of the server's PNG of a generated image (3, H, W)."""
    from tlgan.studio.app import encode_png

    return np.asarray(Image.open(io.BytesIO(encode_png(image))).convert("RGB"))


def open_page(browser, requests_failing: bool = False):
    """A new page and the list its console errors and page errors go to (and failed requests with
    ``requests_failing``), for a test to assert empty at the end."""
    page = browser.new_page(viewport={"width": 1320, "height": 900})
    problems = []
    page.on(
        "console",
        lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    if requests_failing:
        page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url}"))
    return page, problems


def test_studio_page_edits_scores_and_locks(browser, studio):
    server, G, axes = studio
    seed = bearded_man(G)
    page, problems = open_page(browser, requests_failing=True)

    def idle():
        # A selector wait, not wait_for_function: the page's CSP forbids the eval that would need.
        page.locator('body[data-state="idle"]').wait_for(state="attached", timeout=30_000)

    def press(name: str, times: int = 1):
        button = page.get_by_role("button", name=name, exact=True)
        for _ in range(times):
            button.click()
            idle()

    def score(attr: str) -> float:
        return float(
            page.locator(f'[role="meter"][aria-label="{attr} score"]').get_attribute("aria-valuenow")
        )

    def amount(attr: str) -> float:
        return float(page.get_by_role("slider", name=f"{attr} amount").input_value())

    page.goto(f"{server.url}?seed={seed}")
    idle()
    edited = page.get_by_alt_text("edited face")
    original = page.get_by_alt_text("original face")
    assert (edited.get_attribute("src") or "").startswith("blob:")  # PNG bytes, no base64 detour
    with torch.inference_mode():
        face = G.synthesize(G.sample_latents_at([seed], seed=0))[0]
    assert np.array_equal(shown_pixels(edited), png_pixels(face))
    assert np.array_equal(shown_pixels(original), shown_pixels(edited))
    assert page.get_by_label("Seed").input_value() == str(seed)
    rendered_width = edited.evaluate("img => img.getBoundingClientRect().width")
    assert rendered_width >= 256 and edited.evaluate("img => img.naturalWidth") == 64
    assert edited.evaluate("img => getComputedStyle(img).imageRendering") == "pixelated"

    # Smiling + three times: the face changes and the classifier sees more smile.
    pixels0, smile0 = shown_pixels(edited), score("Smiling")
    press("Smiling +", 3)
    assert amount("Smiling") == pytest.approx(1.5)
    assert np.abs(shown_pixels(edited).astype(int) - pixels0).max() > 50
    assert np.array_equal(shown_pixels(original), pixels0)
    assert score("Smiling") > smile0 + 0.1

    # Beard - without a lock drags Male along (the two axes overlap) ...
    press("Reset")
    assert score("Smiling") == pytest.approx(smile0, abs=1e-4) and amount("Smiling") == 0
    male0, beard0 = score("Male"), score("Beard")
    press(f"Beard {MINUS}", 3)
    male_free, beard_free = score("Male"), score("Beard")

    # ... and with Male locked it does not, while the beard still goes.
    press("Reset")
    page.get_by_role("checkbox", name="lock Male").check()
    idle()
    assert page.get_by_role("button", name="Male +", exact=True).is_disabled()
    press(f"Beard {MINUS}", 3)
    male_locked, beard_locked = score("Male"), score("Beard")
    assert beard_free < beard0 - 0.1 and beard_locked < beard0 - 0.1
    assert abs(male_locked - male0) < abs(male_free - male0)
    assert abs(male_free - male0) > 0.1

    # Undo steps back one press; the keyboard works (Enter on a focused button).
    press("Undo")
    assert amount("Beard") == pytest.approx(-1.0)
    page.get_by_role("button", name="Smiling +", exact=True).focus()
    page.keyboard.press("Enter")
    idle()
    page.keyboard.press("Enter")
    idle()
    page.keyboard.press("Enter")
    idle()
    assert amount("Smiling") == pytest.approx(1.5)

    # No error message appeared on the page.
    assert page.get_by_role("alert").is_hidden()

    page.mouse.move(0, 0)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    png = page.screenshot(full_page=True)
    assert png.startswith(b"\x89PNG")
    if os.environ.get("TLGAN_UPDATE_SCREENSHOT"):  # refresh the README's picture on request only
        with atomic_path(SCREENSHOT) as tmp:
            tmp.write_bytes(png)
    assert not problems, problems
    page.close()


def test_an_uploaded_photo_becomes_the_original_and_is_edited(browser, studio, monkeypatch, tmp_path):
    import tlgan.inversion
    from tlgan.studio.app import encode_png

    server, G, axes = studio
    truth = G.sample_latents_at([321], seed=0)[0]
    with torch.inference_mode():
        photo = G.synthesize(truth[None])[0]
    path = tmp_path / "holiday.png"
    path.write_bytes(encode_png(photo))
    received = []

    def perfect_inversion(generator, classifier, image_bytes, **options):
        received.append(image_bytes)
        return truth.clone(), photo, {"psnr_db": 99.0}

    # The server runs in this process, so the endpoint's lazy import finds this stand-in.
    monkeypatch.setattr(tlgan.inversion, "invert_image", perfect_inversion, raising=False)
    page, problems = open_page(browser)
    idle = page.locator('body[data-state="idle"]')
    page.goto(f"{server.url}?seed=1")
    idle.wait_for(state="attached")

    # toyfaces-render is computed, not learned: nothing to tune, so the page offers no tuning.
    assert not page.get_by_label("Tune the generator to this photo").is_visible()
    page.get_by_label("Edit your own photo").set_input_files(str(path))
    page.get_by_text("Loaded holiday.png").wait_for()
    idle.wait_for(state="attached")
    assert received == [path.read_bytes()]
    original = page.get_by_alt_text("original face")
    assert np.array_equal(shown_pixels(original), png_pixels(photo))
    assert "holiday.png" in page.locator("#original-caption").inner_text()

    page.get_by_role("button", name="Smiling +", exact=True).click()
    idle.wait_for(state="attached")
    edited = shown_pixels(page.get_by_alt_text("edited face"))
    from tlgan.editing.edit import edit_latents

    with torch.inference_mode():
        expected = G.synthesize(edit_latents(truth, axes, {"Smiling": 0.5})[None])[0]
    assert np.array_equal(edited, png_pixels(expected))
    assert not problems, problems
    page.close()


def test_ticking_tune_gives_a_tuned_face_whose_edits_and_learned_rows_work(browser, tmp_path):
    """A wp studio on a tiny StyleGAN2 with a learned edit, real inversion and tuning: the box
    makes the page carry the tuned id, and every image it then shows is the tuned generator's,
    axis moves and learned rows alike."""
    from stylegan_fixtures import tiny_stylegan2
    from test_studio_api import small_classifier
    from test_studio_learned import trained
    from test_studio_spaces import NAMES, w_axes
    from tlgan.delta import delta_edit
    from tlgan.editing.edit import edit_latents
    from tlgan.studio.app import encode_png

    G, other = tiny_stylegan2(), tiny_stylegan2(seed=5)
    axes = w_axes(G)
    yaw = trained(tmp_path, G, "wp", "yaw")
    with torch.inference_mode():
        photo = other.synthesize(other.sample_latents_at([3], seed=0, space="wp"), "wp")[0]
    path = tmp_path / "portrait.png"
    path.write_bytes(encode_png(photo))
    app = create_app(
        G, small_classifier(NAMES), axes, space="wp", invert_steps=20, tune_steps=20, learned={"yaw": yaw}
    )
    with ServerThread(app) as server:
        page, problems = open_page(browser)
        idle = page.locator('body[data-state="idle"]')
        page.goto(f"{server.url}?seed=1")
        idle.wait_for(state="attached")

        page.get_by_label("Tune the generator to this photo").check()
        page.get_by_label("Edit your own photo").set_input_files(str(path))
        page.get_by_text("with a generator tuned to it", exact=False).wait_for(timeout=60_000)
        idle.wait_for(state="attached")
        state = page.evaluate("window.tlganStudio.state()")
        studio = app.state.studio
        assert state["tuned"] and state["tuned"] in studio.tuned
        tuned_G = studio.tuned.get(state["tuned"]).generator
        latent = torch.tensor(state["latent"], dtype=torch.float32).reshape(G.num_ws, G.w_dim)
        with torch.inference_mode():
            reconstruction = tuned_G.synthesize(latent[None], "wp")[0]
        assert np.array_equal(shown_pixels(page.get_by_alt_text("original face")), png_pixels(reconstruction))

        page.get_by_role("button", name="Smiling +", exact=True).click()
        idle.wait_for(state="attached")
        with torch.inference_mode():
            expected = tuned_G.synthesize(
                edit_latents(latent, axes, {"Smiling": 0.5}, space="wp")[None], "wp"
            )[0]
            shared = G.synthesize(edit_latents(latent, axes, {"Smiling": 0.5}, space="wp")[None], "wp")[0]
        edited = shown_pixels(page.get_by_alt_text("edited face"))
        assert np.array_equal(edited, png_pixels(expected)) and not np.array_equal(edited, png_pixels(shared))

        # The learned row: its + applies after the axis move; it has no lock to offer.
        assert (
            not page.get_by_label("lock yaw").is_visible() and page.get_by_label("lock Smiling").is_visible()
        )
        page.get_by_role("button", name="yaw +", exact=True).click()
        idle.wait_for(state="attached")
        moved = delta_edit(edit_latents(latent, axes, {"Smiling": 0.5}, space="wp"), yaw, 0.5)
        with torch.inference_mode():
            expected = tuned_G.synthesize(moved[None], "wp")[0]
        assert np.array_equal(shown_pixels(page.get_by_alt_text("edited face")), png_pixels(expected))
        assert page.evaluate("window.tlganStudio.state()")["amounts"] == {"Smiling": 0.5, "yaw": 0.5}

        # A new random face leaves the tuned photo: the shared generator draws it.
        page.get_by_label("Seed").fill("4")
        page.get_by_label("Seed").press("Enter")
        idle.wait_for(state="attached")
        assert page.evaluate("window.tlganStudio.state()")["tuned"] is None
        with torch.inference_mode():
            face4 = G.synthesize(G.sample_latents_at([4], seed=0, space="wp"), "wp")[0]
        assert np.array_equal(shown_pixels(page.get_by_alt_text("edited face")), png_pixels(face4))
        assert not problems, problems
        page.close()
