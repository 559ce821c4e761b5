"""Pivotal tuning per uploaded photo in the studio (wp, on a tiny seeded StyleGAN2).

The photo is drawn by a *different* tiny StyleGAN2, so no latent of the studio's generator
reproduces it exactly and tuning has something to gain. A tuned photo's id must draw with its
own generator; requests without the id must stay bit for bit the shared generator's.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from stylegan_fixtures import tiny_stylegan2  # noqa: E402
from test_studio_api import decode, small_classifier  # noqa: E402
from test_studio_spaces import NAMES, drawn, render, w_axes  # noqa: E402
from tlgan.editing.edit import edit_latents  # noqa: E402
from tlgan.errors import TlganError  # noqa: E402
from tlgan.studio.app import create_app, data_url, encode_png  # noqa: E402
from tlgan.studio.tuned import TunedFaceGone, TunedStore  # noqa: E402

torch.set_num_threads(1)
log = logging.getLogger(__name__)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10.0 * np.log10(255.0**2 / max(mse, 1e-12))


def photo_of(seed: int):
    """PNG bytes and pixels of a face from another network than the studio's."""
    other = tiny_stylegan2(seed=5)
    with torch.inference_mode():
        image = other.synthesize(other.sample_latents_at([seed], seed=0, space="wp"), "wp")[0]
    data = encode_png(image)
    return data, decode(data_url(data))


@pytest.fixture(scope="module")
def setup():
    G = tiny_stylegan2()
    app = create_app(
        G, small_classifier(NAMES), w_axes(G), space="wp", invert_steps=30, tune_steps=40, max_tuned=2
    )
    return G, TestClient(app)


def upload(client, data: bytes, tune: bool):
    response = client.post(
        "/api/invert", files={"file": ("me.png", data, "image/png")}, data={"tune": "true"} if tune else {}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_tuned_photo_is_drawn_closer_and_other_requests_are_untouched(setup):
    G, client = setup
    studio = client.app.state.studio
    before = render(client, seed=11, amounts={"Smiling": 1.0})  # the shared generator, before any tuning
    data, photo = photo_of(3)
    result = upload(client, data, tune=True)
    tuned_id = result["tuned_id"]
    assert tuned_id and tuned_id in studio.tuned
    tuned_G = studio.tuned.get(tuned_id).generator
    assert tuned_G is not G
    latent = torch.tensor(result["latent"], dtype=torch.float32).reshape(G.num_ws, G.w_dim)

    # The pivot through the tuned generator is closer to the photo than through the original.
    untuned = decode(render(client, latent=result["latent"])["image"])
    tuned = decode(render(client, latent=result["latent"], tuned_id=tuned_id)["image"])
    assert np.array_equal(untuned, drawn(G, latent))
    assert np.array_equal(tuned, drawn(tuned_G, latent)) and np.array_equal(decode(result["image"]), tuned)
    gain = psnr(tuned, photo) - psnr(untuned, photo)
    log.info("studio tuning: PSNR untuned %.2f dB, tuned %.2f dB", psnr(untuned, photo), psnr(tuned, photo))
    assert gain > 1.0, (psnr(untuned, photo), psnr(tuned, photo))
    assert result["info"]["tuned"]["psnr_db"] > result["info"]["tuned"]["start_psnr_db"]

    # Edits of the tuned face are the tuned generator's drawing of the edited latent, and
    # never go through the shared generator's batches.
    drawn_before = studio.draw_batcher.items_
    moved = render(
        client, latent=result["latent"], tuned_id=tuned_id, amounts={"Smiling": 2.0}, locks=["Male"]
    )
    expected = edit_latents(latent, studio.axes, {"Smiling": 2.0}, ["Male"], space="wp")
    assert np.array_equal(decode(moved["image"]), drawn(tuned_G, expected))
    scores = client.post("/api/probabilities", json={"latent": result["latent"], "tuned_id": tuned_id})
    assert scores.status_code == 200, scores.text
    assert studio.draw_batcher.items_ == drawn_before

    # Without the id: bit for bit the shared generator, as before the tuning.
    after = render(client, seed=11, amounts={"Smiling": 1.0})
    assert after == before
    assert np.array_equal(
        decode(after["image"]), drawn(G, torch.tensor(after["latent"]).reshape(G.num_ws, G.w_dim))
    )


def test_an_upload_without_tune_has_no_tuned_id(setup):
    _G, client = setup
    result = upload(client, photo_of(4)[0], tune=False)
    assert "tuned_id" not in result and "tuned" not in result["info"]


def test_the_store_forgets_the_least_recently_used_beyond_its_bound(setup):
    G, client = setup
    studio = client.app.state.studio
    first = upload(client, photo_of(6)[0], tune=True)["tuned_id"]
    second = upload(client, photo_of(7)[0], tune=True)["tuned_id"]
    render(client, seed=1, tuned_id=first)  # first is now the most recently used
    third = upload(client, photo_of(8)[0], tune=True)["tuned_id"]
    assert len(studio.tuned) == 2 and first in studio.tuned and third in studio.tuned
    assert client.get("/api/attributes").json()["max_tuned"] == 2
    gone = client.post("/api/render", json={"seed": 1, "tuned_id": second})
    assert gone.status_code == 410 and "upload the photo again" in gone.json()["detail"]
    assert client.post("/api/probabilities", json={"seed": 1, "tuned_id": second}).status_code == 410
    assert render(client, seed=1, tuned_id=third)["image"]


@pytest.mark.parametrize("tuned_id, status", [("A" * 24, 410), ("not an id!", 422), ("x" * 200, 422)])
def test_unknown_or_malformed_ids_are_refused(setup, tuned_id, status):
    _G, client = setup
    response = client.post("/api/render", json={"seed": 2, "tuned_id": tuned_id})
    assert response.status_code == status, response.text
    assert "tuned_id" in response.json()["detail"] or "upload the photo again" in response.json()["detail"]


def test_tuning_turned_off_is_refused_before_any_work(monkeypatch):
    import tlgan.inversion

    G = tiny_stylegan2()
    client = TestClient(create_app(G, small_classifier(NAMES), w_axes(G), space="wp", max_tuned=0))
    monkeypatch.setattr(
        tlgan.inversion, "invert_image", lambda *a, **k: pytest.fail("inverted anyway"), raising=False
    )
    response = client.post(
        "/api/invert", files={"file": ("me.png", photo_of(1)[0], "image/png")}, data={"tune": "true"}
    )
    assert response.status_code == 422 and "--max-tuned" in response.json()["detail"]
    assert client.get("/api/attributes").json()["max_tuned"] == 0


def test_tuned_store_unit():
    store = TunedStore(2)
    a, b = store.add("ga"), store.add("gb")
    assert a.id != b.id and len(a.id) >= 16
    assert store.get(a.id).generator == "ga"
    c = store.add("gc")
    assert [x in store for x in (a.id, b.id, c.id)] == [True, False, True] and store.evicted_ == 1
    with pytest.raises(TunedFaceGone, match="upload the photo again"):
        store.get(b.id)
    with pytest.raises(TlganError, match="max_tuned must be >= 0"):
        TunedStore(-1)


def test_a_generator_without_weights_cannot_be_tuned(monkeypatch):
    import tlgan.inversion
    from test_studio_api import small_classifier as classifier
    from tlgan.models import load_generator

    G = load_generator("toyfaces-render")
    client = TestClient(create_app(G, classifier(G.true_axes().attributes), G.true_axes()))
    monkeypatch.setattr(
        tlgan.inversion, "invert_image", lambda *a, **k: pytest.fail("inverted anyway"), raising=False
    )
    response = client.post(
        "/api/invert", files={"file": ("me.png", photo_of(1)[0], "image/png")}, data={"tune": "true"}
    )
    assert response.status_code == 422 and "no weights to tune" in response.json()["detail"]
    assert client.get("/api/attributes").json()["max_tuned"] == 0  # the page hides its checkbox


def test_concurrent_tuned_and_shared_requests_each_get_their_own_generator(setup):
    from concurrent.futures import ThreadPoolExecutor

    G, client = setup
    studio = client.app.state.studio
    result = upload(client, photo_of(9)[0], tune=True)
    tuned_id, latent = result["tuned_id"], result["latent"]
    tuned_G = studio.tuned.get(tuned_id).generator
    shape = (G.num_ws, G.w_dim)
    bodies = [
        {"latent": latent, "amounts": {"Smiling": 0.25 * k}, **({"tuned_id": tuned_id} if k % 2 else {})}
        for k in range(16)
    ]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda body: render(client, **body), bodies))
    for body, reply in zip(bodies, replies, strict=True):
        edited = torch.tensor(reply["latent"]).reshape(shape)
        shown = decode(reply["image"]).astype(int)
        own, other = (tuned_G, G) if "tuned_id" in body else (G, tuned_G)
        if "tuned_id" in body:  # drawn alone: exactly its own generator's image
            assert np.array_equal(shown, drawn(own, edited))
        else:  # the shared batches may differ from a batch of one in the last bits (see batcher docs)
            assert np.abs(shown - drawn(own, edited)).max() <= 1
        assert np.abs(shown - drawn(other, edited)).max() > 8
