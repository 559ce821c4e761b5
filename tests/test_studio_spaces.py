"""The studio in StyleGAN2's w and wp spaces, on a tiny seeded StyleGAN2 (32 px, 8 layers of w).

A wp studio takes latents of shape (num_ws, w_dim), flat or nested, moves them along axes
fitted in w (the same move in every layer), and inverts uploads in W+; what it draws must be
exactly ``generator.synthesize(latent, "wp")``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

import tlgan.inversion  # noqa: E402
from stylegan_fixtures import tiny_stylegan2  # noqa: E402
from test_studio_api import decode, small_classifier  # noqa: E402
from tlgan.axes import FeatureAxes  # noqa: E402
from tlgan.editing.edit import edit_latents  # noqa: E402
from tlgan.errors import TlganError  # noqa: E402
from tlgan.studio.app import create_app, encode_png  # noqa: E402

torch.set_num_threads(1)

NAMES = ["Smiling", "Male", "Beard"]


def w_axes(generator, seed: int = 3) -> FeatureAxes:
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(len(NAMES), generator.w_dim, generator=g)
    return FeatureAxes(
        vectors / vectors.norm(dim=1, keepdim=True), NAMES, space="w", generator=generator.name
    )


@pytest.fixture(scope="module")
def models():
    G = tiny_stylegan2()
    return G, small_classifier(NAMES), w_axes(G)


@pytest.fixture(scope="module")
def wp_client(models):
    G, F, axes = models
    return TestClient(create_app(G, F, axes, space="wp", invert_steps=30))


def pixels(image: torch.Tensor) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(encode_png(image))).convert("RGB"))


def drawn(G, latent: torch.Tensor, space: str = "wp") -> np.ndarray:
    with torch.inference_mode():
        return pixels(G.synthesize(latent[None], space)[0])


def render(client, **body):
    response = client.post("/api/render", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_wp_studio_describes_its_latents(wp_client, models):
    G, _F, _axes = models
    info = wp_client.get("/api/attributes").json()
    assert info["space"] == "wp" and info["axes_space"] == "w"
    assert info["latent_shape"] == [G.num_ws, G.w_dim] and info["latent_dim"] == G.num_ws * G.w_dim


def test_a_wp_seed_is_the_mapped_face_and_edits_move_every_layer(wp_client, models):
    G, _F, axes = models
    base = G.sample_latents_at([5], seed=0, space="wp")[0]
    reply = render(wp_client, seed=5, amounts={"Smiling": 1.5, "Male": -0.5}, locks=["Beard"])
    latent = torch.tensor(reply["latent"], dtype=torch.float32)
    expected = edit_latents(base, axes, {"Smiling": 1.5, "Male": -0.5}, ["Beard"], space="wp")
    assert latent.shape == (G.num_ws * G.w_dim,) and torch.equal(latent.reshape(G.num_ws, G.w_dim), expected)
    assert np.array_equal(decode(reply["image"]), drawn(G, expected))
    # Every layer moved by the same w step, and the locked axis did not move in any layer.
    step = expected - base
    assert torch.allclose(step, step[:1].expand_as(step), atol=1e-6)
    assert torch.allclose(step @ axes["Beard"], torch.zeros(G.num_ws), atol=1e-5)


def test_an_uploaded_photo_inverts_in_wp_and_renders_exactly(wp_client, models):
    G, _F, axes = models
    truth = G.sample_latents_at([77], seed=0, space="wp")[0]
    with torch.inference_mode():
        photo = encode_png(G.synthesize(truth[None], "wp")[0])
    reply = wp_client.post("/api/invert", files={"file": ("me.png", photo, "image/png")})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    assert result["space"] == "wp" and len(result["latent"]) == G.num_ws * G.w_dim
    latent = torch.tensor(result["latent"], dtype=torch.float32).reshape(G.num_ws, G.w_dim)
    # A W+ search: the layers' w differ (a w or z search would give one w repeated).
    assert float((latent - latent.mean(0)).abs().max()) > 1e-4
    # The search moved toward the photo from where a W+ search starts (the average w in every layer).
    from tlgan.inversion.encoder import psnr_db
    from tlgan.inversion.optimize import mean_latent

    with torch.inference_mode():
        target = G.synthesize(truth[None], "wp")
        start = float(psnr_db(G.synthesize(mean_latent(G, "wp"), "wp"), target)[0])
    assert result["info"]["psnr_db"] > start + 1.0
    expected = drawn(G, latent)
    assert np.array_equal(decode(result["image"]), expected)
    # Flat (as returned) and nested (num_ws lists of w_dim) latents draw the same face.
    flat = render(wp_client, latent=result["latent"])
    nested = render(wp_client, latent=latent.tolist())
    assert np.array_equal(decode(flat["image"]), expected) and nested["image"] == flat["image"]
    moved = render(wp_client, latent=result["latent"], amounts={"Smiling": 2.0})
    assert np.array_equal(
        decode(moved["image"]), drawn(G, edit_latents(latent, axes, {"Smiling": 2.0}, space="wp"))
    )


@pytest.mark.parametrize(
    "latent, message",
    [
        ([0.1] * 127, "8 x 16 numbers"),
        ([[0.1] * 15] * 8, "shape [8, 15]"),
        ([[0.1] * 16] * 7, "shape [7, 16]"),
        ([[0.1] * 16] * 7 + [[0.1] * 15], "not a regular list"),
        ([[[0.1] * 16] * 8], "latent"),
    ],
)
def test_wp_latents_of_the_wrong_shape_get_a_422_naming_the_shape(wp_client, latent, message):
    response = wp_client.post("/api/render", json={"latent": latent})
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    assert render(wp_client, seed=1)["latent"]  # and the server goes on


def test_a_w_studio_inverts_uploads_in_w(models, monkeypatch):
    G, F, axes = models
    client = TestClient(create_app(G, F, axes, space="w"))
    truth = G.sample_latents_at([9], seed=0, space="w")[0]
    seen = {}

    def spy(generator, classifier, image_bytes, **options):
        seen.update(options)
        with torch.inference_mode():
            return truth.clone(), G.synthesize(truth[None], "w")[0], {}

    monkeypatch.setattr(tlgan.inversion, "invert_image", spy, raising=False)
    reply = client.post("/api/invert", files={"file": ("me.png", b"PNG", "image/png")})
    assert reply.status_code == 200, reply.text
    assert seen["space"] == "w"
    assert np.array_equal(decode(reply.json()["image"]), drawn(G, truth, "w"))
    assert client.get("/api/attributes").json()["latent_shape"] == [G.w_dim]


def test_spaces_the_axes_cannot_edit_are_refused(models):
    G, F, axes = models
    with pytest.raises(TlganError, match="cannot edit faces in 'z'"):
        create_app(G, F, axes, space="z")
    z_axes = FeatureAxes(torch.eye(3, G.z_dim), NAMES, space="z", generator=G.name)
    with pytest.raises(TlganError, match="cannot edit faces in 'wp'"):
        create_app(G, F, z_axes, space="wp")
    with pytest.raises(TlganError, match="no latent space 'q'"):
        create_app(G, F, axes, space="q")


def test_app_from_specs_serves_wp_with_w_axes_and_refuses_z_axes(models, tmp_path):
    from tlgan.models.formats.folder import save_pretrained
    from tlgan.studio.app import app_from_specs

    G, _F, axes = models
    folder = save_pretrained(G, tmp_path / "sg2")
    axes.save(tmp_path / "w.safetensors")
    app = app_from_specs(str(folder), "toyfaces-classifier", str(tmp_path / "w.safetensors"), space="wp")
    client = TestClient(app)
    info = client.get("/api/attributes").json()
    assert info["space"] == "wp" and info["latent_shape"] == [G.num_ws, G.w_dim]
    loaded = app.state.studio.generator
    reply = render(client, seed=2, amounts={"Male": 1.0})
    expected = edit_latents(
        loaded.sample_latents_at([2], seed=0, space="wp")[0], axes, {"Male": 1.0}, space="wp"
    )
    assert np.array_equal(decode(reply["image"]), drawn(loaded, expected))
    FeatureAxes(torch.eye(3, G.z_dim), NAMES, space="z", generator=G.name).save(tmp_path / "z.safetensors")
    with pytest.raises(TlganError, match="cannot edit 'wp' faces; fit axes in 'w'"):
        app_from_specs(str(folder), "toyfaces-classifier", str(tmp_path / "z.safetensors"), space="wp")
