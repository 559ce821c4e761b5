"""The studio's per-request view of a StyleGAN3 face: rotate and translate, without a latent edit.

A tiny StyleGAN3-T in NVlabs' pickle layout (written by the project's own fixtures) is served;
a render turned by theta and moved by (x, y) must be the image ``tlgan edit --rotate theta
--translate x,y`` writes for the same face and edit, and the shared generator must never keep
a request's view: concurrent requests with different views each get their own.
"""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from test_studio_api import small_classifier  # noqa: E402
from test_studio_spaces import NAMES, w_axes  # noqa: E402
from tlgan.editing.edit import edit_latents  # noqa: E402
from tlgan.models import load_generator  # noqa: E402
from tlgan.models.formats.stylegan3_fixtures import tiny_stylegan3, write_nvlabs_stylegan3_pickle  # noqa: E402
from tlgan.models.stylegan3 import input_transform  # noqa: E402
from tlgan.studio.app import ServerThread, create_app, encode_png  # noqa: E402

torch.set_num_threads(1)

VIEWS = [(30.0, (0.1, -0.05)), (-45.0, (0.0, 0.0)), (0.0, (-0.125, 0.25))]


@pytest.fixture(scope="module")
def sg3(tmp_path_factory):
    """(pickle path, axes path, generator loaded from the pickle, axes)."""
    root = tmp_path_factory.mktemp("sg3view")
    pkl = root / "sg3t.pkl"
    write_nvlabs_stylegan3_pickle(tiny_stylegan3("t"), pkl)
    G = load_generator(str(pkl))
    axes = w_axes(G)
    axes_path = root / "axes.safetensors"
    axes.save(axes_path)
    return pkl, axes_path, G, axes


@pytest.fixture(scope="module")
def client(sg3):
    _, _, G, axes = sg3
    return TestClient(create_app(G, small_classifier(NAMES), axes, generator_name="sg3t"))


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def expected(pkl, latent: torch.Tensor, rotate: float, translate) -> np.ndarray:
    """What a fresh generator with that transform draws for ``latent`` (w), alone."""
    G = load_generator(str(pkl), input_transform=input_transform(rotate, translate))
    with torch.inference_mode():
        return pixels(encode_png(G.synthesize(latent[None], "w")[0]))


def test_a_turned_and_moved_render_is_what_tlgan_edit_writes(client, sg3, tmp_path):
    from click.testing import CliRunner

    from tlgan.cli import cli

    pkl, axes_path, G, axes = sg3
    body = {"seed": 3, "amounts": {"Smiling": 1.5}, "rotate": 30.0, "translate": [0.1, -0.05]}
    reply = client.post("/api/render", json={**body, "format": "png"})
    assert reply.status_code == 200, reply.text
    assert json.loads(reply.headers["X-Tlgan-Input-Transform"]) == {"rotate": 30.0, "translate": [0.1, -0.05]}
    out = tmp_path / "edit.png"
    args = ["edit", "--generator", str(pkl), "--axes", str(axes_path), "--seed", "3", "--attr", "Smiling=1.5"]
    args += ["--rotate", "30", "--translate", "0.1,-0.05", "--upscale", "1", "--out", str(out), "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    recorded = json.loads(result.output[result.output.index("{") :])["input_transform"]
    studio_png = pixels(reply.content)
    assert np.array_equal(studio_png, pixels(out.read_bytes()))
    # The JSON answer records the view as tlgan edit does, and its latent is the plain edit.
    meta = client.post("/api/render", json=body).json()
    assert meta["input_transform"] == recorded == {"rotate": 30.0, "translate": [0.1, -0.05]}
    base = G.sample_latents_at([3], seed=0, space="w")[0]
    edited = edit_latents(base, axes, {"Smiling": 1.5}, space="w")
    assert torch.allclose(torch.tensor(meta["latent"]), edited, atol=1e-6)
    assert np.array_equal(studio_png, expected(pkl, edited, 30.0, (0.1, -0.05)))
    # The view turned the image (not a no-op), and the shared generator kept its own transform.
    plain = pixels(
        client.post("/api/render", json={**body, "rotate": None, "translate": None, "format": "png"}).content
    )
    assert np.abs(plain.astype(int) - studio_png).mean() > 5
    assert (
        "X-Tlgan-Input-Transform" not in client.post("/api/render", json={"seed": 3, "format": "png"}).headers
    )
    assert torch.equal(G.synthesis.input.transform, torch.eye(3))
    assert np.array_equal(plain, expected(pkl, edited, 0.0, (0.0, 0.0)))


def test_concurrent_requests_with_different_views_each_get_their_own(sg3):
    pkl, _, G, axes = sg3
    app = create_app(G, small_classifier(NAMES), axes, max_batch=8, batch_wait_ms=20)
    seeds = [5, 6]
    jobs = [(seed, rotate, move) for seed in seeds for rotate, move in VIEWS] * 2
    truth = {
        (seed, rotate, move): expected(pkl, G.sample_latents_at([seed], seed=0, space="w")[0], rotate, move)
        for seed in seeds
        for rotate, move in VIEWS
    }
    barrier = threading.Barrier(len(jobs))
    with ServerThread(app) as server:
        import urllib.request

        def ask(job):
            seed, rotate, move = job
            body = json.dumps({"seed": seed, "rotate": rotate, "translate": list(move), "format": "png"})
            request = urllib.request.Request(
                server.url + "api/render", body.encode(), {"Content-Type": "application/json"}
            )
            barrier.wait()
            with urllib.request.urlopen(request, timeout=60) as reply:
                return pixels(reply.read())

        with ThreadPoolExecutor(len(jobs)) as pool:
            answers = list(pool.map(ask, jobs))
    studio = app.state.studio
    assert len(studio._view_batchers) == len(VIEWS)  # one batcher per view, none shared
    for job, answer in zip(jobs, answers, strict=True):
        own = truth[job]
        # Batched rows may differ from a lone draw by float rounding: at most one level, in few pixels.
        assert np.abs(answer.astype(int) - own).max() <= 1, job
        for other, image in truth.items():
            if other != job:
                assert np.abs(answer.astype(int) - image).mean() > 2, (job, other)
    assert torch.equal(G.synthesis.input.transform, torch.eye(3))


def test_the_server_view_is_the_default_and_generators_without_a_transform_refuse_one(sg3, client):
    pkl, _, _, axes = sg3
    turned = load_generator(str(pkl), input_transform=input_transform(10.0, (0.25, 0.0)))
    app = TestClient(create_app(turned, small_classifier(NAMES), axes))
    info = app.get("/api/attributes").json()
    assert info["input_transform"] == {"rotate": 10.0, "translate": [0.25, 0.0]}
    base = turned.sample_latents_at([2], seed=0, space="w")[0]
    default = pixels(app.post("/api/render", json={"seed": 2, "format": "png"}).content)
    assert np.array_equal(default, expected(pkl, base, 10.0, (0.25, 0.0)))
    # A request's own view replaces the server's for that request only.
    straight = pixels(app.post("/api/render", json={"seed": 2, "rotate": 0, "format": "png"}).content)
    assert np.array_equal(straight, expected(pkl, base, 0.0, (0.0, 0.0)))
    assert client.get("/api/attributes").json()["input_transform"] == {"rotate": 0.0, "translate": [0.0, 0.0]}

    bad = client.post("/api/render", json={"seed": 2, "rotate": float("1e9")})
    assert bad.status_code == 422 and "rotate" in bad.json()["detail"]

    from stylegan_fixtures import tiny_stylegan2

    G2 = tiny_stylegan2()
    sg2 = TestClient(create_app(G2, small_classifier(NAMES), w_axes(G2)))
    assert sg2.get("/api/attributes").json()["input_transform"] is None
    refused = sg2.post("/api/render", json={"seed": 1, "rotate": 15})
    assert refused.status_code == 422
    assert "no input transform" in refused.json()["detail"] and "leave them out" in refused.json()["detail"]
