"""/api/face: an uploaded photo's face prepared for the translation rows without an inversion.

Set-up as in test_studio_photos.py (scikit-image's astronaut, the analytic toyfaces renderer at
64 px, a stand-in inversion); the checks hold the new route to /api/invert's own answers.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("httpx")
pytest.importorskip("skimage.data")
from fastapi.testclient import TestClient  # noqa: E402

import tlgan.inversion  # noqa: E402
from test_studio_api import small_classifier  # noqa: E402
from test_studio_photos import (  # noqa: E402
    StandIn,
    astronaut,  # noqa: F401 (fixture)
    models,  # noqa: F401 (fixture)
    needs_dlib,
    translation_64,  # noqa: F401 (fixture)
)
from tlgan.studio.app import create_app  # noqa: E402
from tlgan.studio.photo_routes import EMPTY_UPLOAD  # noqa: E402

torch.set_num_threads(1)

FACE_FIELDS = ("input_image", "aligned_image", "alignment")


def face_and_invert(client, name: str, data: bytes):
    face = client.post("/api/face", files={"file": (name, data, "image/png")})
    invert = client.post("/api/invert", files={"file": (name, data, "image/png")})
    return face, invert


@pytest.mark.parametrize("align", [None, pytest.param("ffhq", marks=needs_dlib)])
def test_the_face_is_byte_for_byte_invert_s_and_translates_to_the_same_png(
    models,
    astronaut,
    translation_64,
    align,
    monkeypatch,
):
    G, F, axes, _ = models
    model, _ = translation_64
    stand_in = StandIn(G.sample_latents_at([4], seed=0)[0])
    monkeypatch.setattr(tlgan.inversion, "invert_image", stand_in, raising=False)
    app = create_app(G, F, axes, align=align, translations={"Smiling translation": model})
    client = TestClient(app)
    face, invert = face_and_invert(client, "astronaut.png", astronaut.read_bytes())
    assert face.status_code == 200 and invert.status_code == 200, (face.text, invert.text)
    assert len(stand_in.received) == 1  # only /api/invert inverted
    body, inverted = face.json(), invert.json()
    assert set(body) == {f for f in FACE_FIELDS if f in inverted}
    assert ("alignment" in body) == (align is not None)
    for field in body:
        assert body[field] == inverted[field], field  # the same data URL, byte for byte
    for amount in (0.0, 0.75, 1.5):
        amounts = {"Smiling translation": amount}
        ours = client.post("/api/translate", json={"image": body["input_image"], "amounts": amounts})
        theirs = client.post("/api/translate", json={"image": inverted["input_image"], "amounts": amounts})
        assert ours.status_code == 200, ours.text
        assert ours.content == theirs.content, amount
    moved = client.post(
        "/api/translate", json={"image": body["input_image"], "amounts": {"Smiling translation": 1.5}}
    )
    still = client.post("/api/translate", json={"image": body["input_image"], "amounts": {}})
    assert moved.content != still.content


def test_bad_uploads_get_invert_s_errors(models, translation_64, monkeypatch):
    G, F, axes, _ = models
    model, _ = translation_64
    monkeypatch.setattr(tlgan.inversion, "invert_image", StandIn(G.sample_latents_at([1], seed=0)[0]))
    client = TestClient(
        create_app(G, F, axes, translations={"Smiling translation": model}, max_body_bytes=50_000)
    )
    cases = {
        "empty": b"",
        "not an image": b"this is no image at all",
        "too large": bytes(60_000),
    }
    for case, data in cases.items():
        face, invert = face_and_invert(client, "x.png", data)
        assert face.status_code == invert.status_code and face.status_code in (413, 422), case
        assert face.json()["detail"] == invert.json()["detail"], case
    empty, _ = face_and_invert(client, "x.png", b"")
    assert empty.json()["detail"] == EMPTY_UPLOAD
    bad, _ = face_and_invert(client, "x.png", b"this is no image at all")
    assert "x.png" in bad.json()["detail"]


def test_a_studio_without_translations_or_alignment_says_where_to_upload(models):
    G, F, axes, _ = models
    reply = TestClient(create_app(G, F, axes)).post(
        "/api/face", files={"file": ("x.png", b"\x89PNG", "image/png")}
    )
    assert reply.status_code == 422
    assert "/api/invert" in reply.json()["detail"] and "--translation" in reply.json()["detail"]


def test_a_translation_does_not_wait_for_an_inversion(models, astronaut, translation_64):
    """The inversion holds the model lock for its whole search; the face and the translation must not need it."""
    G, F, axes, _ = models
    model, _ = translation_64
    app = create_app(G, small_classifier(axes.attributes), axes, translations={"Smiling translation": model})
    client = TestClient(app)
    studio = app.state.studio
    done = {}
    with studio.locked():  # as an inversion holds it
        worker = threading.Thread(
            target=lambda: done.update(
                face=client.post("/api/face", files={"file": ("a.png", astronaut.read_bytes(), "image/png")})
            )
        )
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "/api/face waited for the model lock"
        image = done["face"].json()["input_image"]
        worker = threading.Thread(
            target=lambda: done.update(
                moved=client.post(
                    "/api/translate", json={"image": image, "amounts": {"Smiling translation": 1.0}}
                )
            )
        )
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "/api/translate waited for the model lock"
    assert done["moved"].status_code == 200, done["moved"].text
    again = client.post("/api/translate", json={"image": image, "amounts": {"Smiling translation": 1.0}})
    assert done["moved"].content == again.content  # the same answer as with the lock free


@needs_dlib
def test_a_photo_without_a_face_gets_invert_s_message(models, translation_64, monkeypatch):
    G, F, axes, _ = models
    model, _ = translation_64
    stand_in = StandIn(G.sample_latents_at([1], seed=0)[0])
    monkeypatch.setattr(tlgan.inversion, "invert_image", stand_in, raising=False)
    client = TestClient(create_app(G, F, axes, align="ffhq", translations={"Smiling translation": model}))
    buf = io.BytesIO()
    Image.fromarray(np.full((200, 240, 3), 128, np.uint8)).save(buf, format="PNG")
    face, invert = face_and_invert(client, "wall.png", buf.getvalue())
    assert face.status_code == invert.status_code == 422
    assert "wall.png: no face found" in face.json()["detail"]
    assert face.json()["detail"] == invert.json()["detail"]
    assert stand_in.received == []
