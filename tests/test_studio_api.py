"""The studio's JSON API through FastAPI's TestClient, on the analytic toyfaces renderer.

The renderer's true axes are known exactly, so edits are checked against closed forms:
an unlocked move of ``a`` along a unit axis adds exactly ``a * axis``; a locked attribute's
projection does not move at all.
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

import tlgan.inversion  # noqa: E402
from test_studio_batcher import Wrapping  # noqa: E402
from tlgan.errors import TlganError  # noqa: E402
from tlgan.models import ModuleClassifier, load_generator  # noqa: E402
from tlgan.studio.app import AMOUNT_LIMIT, bind_socket, create_app, encode_png  # noqa: E402

torch.set_num_threads(1)


def small_classifier(attributes, seed: int = 0) -> ModuleClassifier:
    """A fixed, seeded linear read-out of an 8x8 average-pooled image: deterministic and image-dependent."""
    gen = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.AdaptiveAvgPool2d(8), torch.nn.Flatten(), torch.nn.Linear(192, len(attributes))
    )
    with torch.no_grad():
        net[2].weight.copy_(torch.randn(len(attributes), 192, generator=gen) * 0.3)
        net[2].bias.zero_()
    return ModuleClassifier(net, attributes, name="test-classifier").eval()


@pytest.fixture(scope="module")
def models():
    G = load_generator("toyfaces-render")
    axes = G.true_axes()
    F = small_classifier(axes.attributes)
    return G, F, axes


@pytest.fixture(scope="module")
def client(models):
    G, F, axes = models
    return TestClient(create_app(G, F, axes, generator_name="toyfaces-render"))


def post(client, **body):
    response = client.post("/api/render", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def studio_edit(client, seed, amounts):
    """The edited latent the app computes in-process for a seed and amounts (no locks)."""
    studio = client.app.state.studio
    return studio.edit(studio.base_latent(seed=seed), amounts, [])


def decode(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    import base64

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def test_attributes_lists_axes_ranges_and_models(client, models):
    G, F, axes = models
    info = client.get("/api/attributes").json()
    assert [a["name"] for a in info["attributes"]] == list(axes.attributes)
    assert all(a["scored"] for a in info["attributes"])
    assert info["amount_min"] == -AMOUNT_LIMIT and info["amount_max"] == AMOUNT_LIMIT
    assert info["generator"] == "toyfaces-render" and info["classifier"] == "test-classifier"
    assert info["latent_dim"] == 512 and info["resolution"] == 64 and info["space"] == "z"


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    html = page.text
    assert 'alt="edited face"' in html and 'alt="original face"' in html
    for asset in ("static/studio.js", "static/photos.js", "static/studio.css"):
        assert asset in html
        served = client.get("/" + asset)
        assert served.status_code == 200
        # Nothing is fetched from elsewhere: no absolute URLs outside comments and namespaces.
        assert "https://" not in served.text and "//cdn" not in served.text
    assert "https://" not in html.replace("http://www.w3.org/2000/svg", "")


def test_render_of_a_seed_is_the_cli_face_with_its_scores(client, models):
    G, F, axes = models
    reply = post(client, seed=7, include_original=True, scores=True)
    base = G.sample_latents_at([7], seed=0)[0]
    assert torch.equal(torch.tensor(reply["latent"], dtype=torch.float32), base)
    with torch.inference_mode():
        image = G.synthesize(base[None])
        probs = F.probabilities(image)[0]
    expected = np.asarray(Image.open(io.BytesIO(encode_png(image[0]))))
    assert np.array_equal(decode(reply["image"]), expected)
    assert reply["original_image"] == reply["image"]  # no moves: the edit is the original
    got = torch.tensor([reply["probabilities"][a] for a in F.attributes])
    assert torch.allclose(got, probs, atol=1e-5)
    assert reply["original_probabilities"] == reply["probabilities"]
    # Without `scores` the classifier is not asked: the page gets the scores from /api/probabilities.
    plain = post(client, seed=7)
    assert "probabilities" not in plain and plain["image"] == reply["image"]


def test_probabilities_are_the_scores_of_the_rendered_face(client, models):
    G, F, axes = models
    body = {
        "seed": 4,
        "amounts": {"Smiling": 1.5, "Bangs": -1.0},
        "locks": ["Male"],
        "include_original": True,
    }
    scored = post(client, **body, scores=True)
    response = client.post("/api/probabilities", json=body)
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["probabilities"] == scored["probabilities"]
    assert reply["original_probabilities"] == scored["original_probabilities"]
    assert reply["probabilities"] != reply["original_probabilities"]
    bad = client.post("/api/probabilities", json={"seed": 4, "amounts": {"Smilin": 1.0}})
    assert bad.status_code == 422 and "did you mean 'Smiling'" in bad.json()["detail"]


class CountingGenerator(Wrapping):
    """Wraps a generator and counts the latents it draws."""

    def __init__(self, inner):
        super().__init__(inner)
        self.drawn = 0

    def synthesize(self, latents, space="z"):
        self.drawn += len(latents)
        return self.inner.synthesize(latents, space)


def test_a_render_and_its_probabilities_run_the_generator_once(models):
    from tlgan.studio.server import Studio

    G, F, axes = models
    counting = CountingGenerator(G)
    client = TestClient(create_app(counting, F, axes, generator_name="toyfaces-render"))
    body = {"seed": 11, "amounts": {"Young": 2.0}}
    first = post(client, **body)
    client.post("/api/probabilities", json=body).raise_for_status()
    assert counting.drawn == 1
    # A different edit is drawn anew; going back to the first is remembered (undo).
    post(client, seed=11, amounts={"Young": 2.5})
    assert counting.drawn == 2
    assert post(client, **body)["image"] == first["image"] and counting.drawn == 2
    # The memo keeps within its byte budget, dropping the least recently used faces.
    studio = Studio(counting, F, axes, image_memo_bytes=3 * 3 * 64 * 64 * 4)
    for seed in range(5):
        studio.synthesize(G.sample_latents_at([seed], seed=0))
    assert len(studio._images) == 3 and studio._images.used <= studio._images.max_bytes
    before = counting.drawn
    studio.synthesize(G.sample_latents_at([4, 0], seed=0))  # 4 is remembered, 0 was dropped
    assert counting.drawn == before + 1


def test_an_unlocked_move_adds_exactly_amount_times_the_axis(client, models):
    G, F, axes = models
    seed = 5  # a face near the smile threshold (latent score -0.28), so the move is visible
    start = post(client, seed=seed)
    reply = post(client, seed=seed, amounts={"Smiling": 2.0})
    moved = torch.tensor(reply["latent"])
    assert torch.allclose(moved - torch.tensor(start["latent"]), 2.0 * axes["Smiling"], atol=1e-5)
    assert np.abs(decode(reply["image"]).astype(int) - decode(start["image"])).max() > 100
    # The edit changes what the classifier sees (it reads the pixels that changed).
    scores = [
        client.post("/api/probabilities", json={"seed": seed, "amounts": amounts}).json()["probabilities"]
        for amounts in ({}, {"Smiling": 2.0})
    ]
    assert max(abs(scores[1][a] - scores[0][a]) for a in F.attributes) > 1e-3


def test_a_lock_keeps_the_locked_projection_fixed(client, models):
    G, F, axes = models
    male, beard = axes["Male"], axes["Beard"]
    cos = float(male @ beard)
    assert cos > 0.5  # the toyfaces world makes beards lean on Male: the lock has work to do
    base = torch.tensor(post(client, seed=3)["latent"])
    free = torch.tensor(post(client, seed=3, amounts={"Beard": -2.0})["latent"]) - base
    locked = torch.tensor(post(client, seed=3, amounts={"Beard": -2.0}, locks=["Male"])["latent"]) - base
    assert float(free @ male) == pytest.approx(-2.0 * cos, abs=1e-4)
    assert float(locked @ male) == pytest.approx(0.0, abs=1e-4)
    # What is left of the Beard move is the part of the Beard axis orthogonal to Male.
    assert float(locked @ beard) == pytest.approx(-2.0 * (1 - cos**2) ** 0.5, abs=1e-4)
    # A lock with no move is a no-op.
    assert torch.equal(torch.tensor(post(client, seed=3, locks=["Male"])["latent"]), base)


def test_a_returned_latent_renders_the_same_face(client):
    first = post(client, seed=5, amounts={"Young": -1.5, "Bangs": 1.0})
    again = post(client, latent=first["latent"])
    assert again["latent"] == first["latent"]
    assert again["image"] == first["image"]
    # The latent travels as JSON with 9 significant digits: exactly the float32 values.
    direct = studio_edit(client, seed=5, amounts={"Young": -1.5, "Bangs": 1.0})
    assert torch.equal(torch.tensor(first["latent"], dtype=torch.float32), direct)


def test_png_format_returns_the_bytes_enlarged(client):
    response = client.post("/api/render", json={"seed": 5, "format": "png", "upscale": 3})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
    assert image.shape == (192, 192, 3)
    native = decode(post(client, seed=5)["image"])
    assert np.array_equal(image[::3, ::3], native)


NAN_LATENT = b'{"latent": [NaN' + b", 0.0" * 511 + b"]}"
INF_LATENT = b'{"latent": [0.0' + b", 0.0" * 510 + b", Infinity]}"

BAD_REQUESTS = [
    ({"seed": 1, "amounts": {"Smiling": AMOUNT_LIMIT + 0.5}}, "outside the allowed range"),
    ({"seed": 1, "amounts": {"Smiling": -1e9}}, "outside the allowed range"),
    ({"seed": 1, "amounts": {"Smilin": 1.0}}, "did you mean 'Smiling'"),
    ({"seed": 1, "locks": ["Beardd"]}, "did you mean 'Beard'"),
    ({"seed": 1, "amounts": {"Smiling": "lots"}}, "amounts.Smiling"),
    ({"latent": [0.0] * 511}, "has 511 numbers but generator 'toyfaces-render' needs 512 (space 'z')"),
    ({"latent": [1e6] + [0.0] * 511}, "not plausible"),
    ({"seed": 1, "latent": [0.0] * 512}, "exactly one of `seed`"),
    ({}, "exactly one of `seed`"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"seed": 1, "upscale": 99}, "upscale"),
    ({"seed": 1, "format": "gif"}, "format"),
    (NAN_LATENT, "NaN or infinite"),
    (INF_LATENT, "NaN or infinite"),
    (b'{"seed": 1, "amounts": {"Smiling": NaN}}', "must be finite"),
    (b'{"seed": 1,', "not valid JSON"),
    (b"[1, 2, 3]", "see /docs"),
]


@pytest.mark.parametrize("body, message", BAD_REQUESTS, ids=[m for _, m in BAD_REQUESTS])
def test_bad_render_requests_get_a_helpful_422_and_the_server_goes_on(client, body, message):
    if isinstance(body, bytes):
        response = client.post("/api/render", content=body, headers={"content-type": "application/json"})
    else:
        response = client.post("/api/render", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and message in detail
    assert post(client, seed=2)["latent"]  # still serving


def test_oversized_bodies_are_refused_with_413(models):
    G, F, axes = models
    client = TestClient(create_app(G, F, axes, max_body_bytes=10_000))
    big = json.dumps({"seed": 1, "locks": ["Male"] * 3000}).encode()
    response = client.post("/api/render", content=big, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "10,000-byte limit" in response.json()["detail"]

    def chunks():  # no Content-Length: the body is counted as it arrives
        for _ in range(20):
            yield b" " * 1000

    response = client.post("/api/render", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and "more than" in response.json()["detail"]
    small = client.post("/api/render", content=b'{"seed": 1}', headers={"content-type": "application/json"})
    assert small.status_code == 200


def test_score_of_an_uploaded_render_matches_the_render(client):
    reply = post(client, seed=9, amounts={"Smiling": 1.0}, scores=True)
    png = client.post("/api/render", json={"seed": 9, "amounts": {"Smiling": 1.0}, "format": "png"}).content
    scored = client.post("/api/score", files={"file": ("face.png", png, "image/png")})
    assert scored.status_code == 200, scored.text
    probs = scored.json()["probabilities"]
    # The upload went through 8-bit PNG, so the scores agree up to quantisation.
    assert max(abs(probs[a] - reply["probabilities"][a]) for a in probs) < 0.01


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims to be width x height but holds no pixel data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "payload, message",
    [
        (png_header(60_000, 60_000), "x.png: refused as a possible decompression bomb"),
        (png_header(8, 8), "too small"),
        (b"", "x.png: the file is empty"),
        (b"not an image", "x.png: not an image file Pillow can read"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "x.png"),
    ],
)
def test_score_rejects_files_that_are_not_images(client, payload, message):
    response = client.post("/api/score", files={"file": ("x.png", payload, "image/png")})
    assert response.status_code == 422 and message in response.json()["detail"]
    missing = client.post("/api/score")
    assert missing.status_code == 422 and "file" in missing.json()["detail"]


def test_invert_is_wired_to_invert_image(client, models, monkeypatch):
    G, F, axes = models
    target = G.sample_latents_at([123], seed=0)[0]
    calls = []

    def fake_invert_image(generator, classifier, image_bytes, **options):
        calls.append((generator, classifier, image_bytes, options))
        with torch.inference_mode():
            return target.clone(), G.synthesize(target[None])[0], {"psnr_db": torch.tensor(31.5), "steps": 10}

    monkeypatch.setattr(tlgan.inversion, "invert_image", fake_invert_image, raising=False)
    response = client.post("/api/invert", files={"file": ("me.jpg", b"JPEGDATA", "image/jpeg")})
    assert response.status_code == 200, response.text
    reply = response.json()
    assert calls and calls[0][0] is G and calls[0][1] is F and calls[0][2] == b"JPEGDATA"
    assert calls[0][3]["space"] == "z"  # searched in the studio's own space
    assert torch.equal(torch.tensor(reply["latent"], dtype=torch.float32), target)
    assert reply["info"] == {"psnr_db": 31.5, "steps": 10}
    # The page then edits the returned latent like any other face.
    assert reply["image"] == post(client, latent=reply["latent"])["image"]


def test_invert_answers_501_when_inversion_is_missing(client, monkeypatch):
    monkeypatch.delattr(tlgan.inversion, "invert_image", raising=False)
    response = client.post("/api/invert", files={"file": ("me.png", b"PNGDATA", "image/png")})
    assert response.status_code == 501
    assert "not available" in response.json()["detail"]
    assert post(client, seed=1)["latent"]


def test_invert_errors_from_the_inversion_become_422(client, monkeypatch):
    def refuse(generator, classifier, image_bytes, **options):
        raise TlganError("the uploaded image is 8x8 pixels; it must be at least 16 px")

    monkeypatch.setattr(tlgan.inversion, "invert_image", refuse, raising=False)
    response = client.post("/api/invert", files={"file": ("tiny.png", b"x", "image/png")})
    assert response.status_code == 422 and "at least 16 px" in response.json()["detail"]


def test_concurrent_requests_do_not_interfere(client):
    variants = [
        {"seed": s, "amounts": {"Smiling": 0.5 * s - 2}, "locks": ["Male"] if s % 2 else []} for s in range(6)
    ]
    alone = [post(client, **v) for v in variants]
    barrier = threading.Barrier(6)

    def run(k):
        barrier.wait()
        return k % 6, post(client, **variants[k % 6])

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(run, range(24)))
    for k, reply in results:
        assert reply["latent"] == alone[k]["latent"] and reply["image"] == alone[k]["image"]


def test_bench_studio_runs_against_a_real_server(models):
    from tlgan.bench.studio import bench_studio

    G, F, axes = models
    result = bench_studio(generator=G, classifier=F, axes=axes, requests=3, clients=4, seconds=1.0)
    assert result["studio_concurrent_errors"] == 0
    assert result["studio_concurrent_requests"] > 0
    assert result["studio_render_ms"] > 0 and result["studio_bare_ms"] > 0
    assert result["studio_render_vs_bare_ratio"] == pytest.approx(
        result["studio_render_ms"] / result["studio_bare_ms"], rel=0.01
    )
    assert result["studio_update_vs_bare_with_scores_ratio"] == pytest.approx(
        result["studio_update_ms"] / result["studio_bare_with_scores_ms"], rel=0.01
    )


def test_a_taken_port_is_reported_clearly():
    first = bind_socket("127.0.0.1", 0)
    try:
        with pytest.raises(TlganError, match="already in use; pick another with --port"):
            bind_socket("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()


def test_serve_is_a_cli_command():
    from click.testing import CliRunner

    from tlgan.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--generator", "--classifier", "--axes", "--host", "--port", "--device"):
        assert option in result.output


def test_a_busy_model_does_not_stall_other_requests(models):
    """While an upload's inversion holds the models, a render waits in a worker thread, not on the event loop."""
    import urllib.request

    from tlgan.studio.app import ServerThread

    G, F, axes = models
    app = create_app(G, F, axes, generator_name="toyfaces-render")
    studio = app.state.studio
    held, release, waiting = threading.Event(), threading.Event(), threading.Event()
    synthesize = studio.synthesize

    def announced_synthesize(latents):  # the render has been read and now waits for the models
        waiting.set()
        return synthesize(latents)

    studio.synthesize = announced_synthesize

    def hold_models():  # what /api/invert does for seconds
        with studio.locked():
            held.set()
            release.wait(30)

    def get(url, body=None):
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read()

    with ServerThread(app) as server, ThreadPoolExecutor(2) as pool:
        holder = pool.submit(hold_models)
        assert held.wait(10)
        render = pool.submit(
            get, server.url + "api/render", json.dumps({"seed": 3, "format": "png"}).encode()
        )
        assert waiting.wait(10)
        status, _ = get(server.url + "api/attributes")  # answered while the render still waits
        assert status == 200 and not render.done()
        release.set()
        status, png = render.result(timeout=20)
        holder.result()
    assert status == 200 and png.startswith(b"\x89PNG")


def test_bench_studio_counts_a_reply_meant_for_another_request(models):
    """The load check is not vacuous: swapped or altered replies are caught."""
    from tlgan.bench.studio_client import PATHS, _check_replies, _request_body
    from tlgan.studio.server import Studio

    G, F, axes = models
    studio = Studio(G, F, axes)
    attributes = list(axes.attributes)
    client = TestClient(create_app(G, F, axes, generator_name="toyfaces-render"))
    replies = [
        (
            path,
            k,
            client.post(
                path,
                content=_request_body(k, attributes, path=path),
                headers={"content-type": "application/json"},
            ).content,
        )
        for k in (7, 27)
        for path in PATHS
    ]  # two faces
    assert _check_replies(studio, G, F, attributes, replies) == 0
    swapped = [(path, k, replies[(i + 2) % 4][2]) for i, (path, k, _) in enumerate(replies)]
    assert _check_replies(studio, G, F, attributes, swapped) == 4


def test_slow_model_work_leaves_the_event_loop_and_comes_back_when_quick(models):
    """Calls slower than INLINE_SECONDS go to worker threads; once they are quick again they run inline."""
    import asyncio

    from tlgan.studio.server import INLINE_SECONDS, Studio

    G, F, axes = models
    studio = Studio(G, F, axes)
    loop_thread = threading.get_ident()

    async def where(seconds):
        def work():
            if seconds:
                threading.Event().wait(seconds)
            return threading.get_ident() == loop_thread

        return await studio.call(work)

    async def scenario():
        assert await where(0)  # quick: inline
        slow = [await where(3 * INLINE_SECONDS) for _ in range(3)]
        assert slow[0] and not slow[-1]  # the first slow call ran inline; then they moved to threads
        quick = [await where(0) for _ in range(12)]
        assert not quick[0] and quick[-1]  # back on the loop once recent calls are quick

    asyncio.run(scenario())
