"""Studio latency and load: /api/render over HTTP against a bare forward pass + PNG encode.

Both sides run in the same process and the same minute, interleaved request by request, so
load from elsewhere on a shared machine hits both alike. The server is a real uvicorn on
127.0.0.1 in a background thread, and the client is the standard library's http.client
over keep-alive connections, so the figures include everything a browser would wait for:
HTTP parsing, JSON, validation, editing, the generator, PNG and base64 (and the classifier
for the scores, which the page asks for alongside the image).

The studio-load section lives in :mod:`tlgan.bench.studio_load`.
"""

from __future__ import annotations

import logging
import statistics
import time

import torch

from tlgan.axes import FeatureAxes
from tlgan.bench.studio_client import _bench_axes, _check_replies, _Client, _concurrent_load, _request_body
from tlgan.models.base import Classifier, Generator

log = logging.getLogger(__name__)


def bench_studio(
    quick: bool = False,
    device: str = "cpu",
    *,
    generator: str | Generator = "toyfaces-gan",
    classifier: str | Classifier = "toyfaces-classifier",
    axes: FeatureAxes | None = None,
    requests: int | None = None,
    clients: int = 20,
    seconds: float | None = None,
) -> dict[str, float]:
    """Latency of /api/render against a bare forward + PNG encode, and correctness under concurrent load.

    ``requests`` single-client rounds (default 300; quick: 30) follow a page session: ten
    clicks on each face, each click re-sending the face's seed with new amounts and a lock.
    Each round times, in this order and on the same face:

    - ``studio_bare_ms``: the generator's forward pass and PNG encoding, called directly;
    - ``studio_bare_with_scores_ms``: the same plus the classifier;
    - ``studio_render_ms``: one /api/render as the page sends it (PNG bytes, no scores);
    - ``studio_update_ms``: what a click costs the page: /api/render and /api/probabilities
      sent at once on two connections, until both have answered.

    Medians in milliseconds, with the ratios render / bare (target <= 1.5) and
    update / bare_with_scores. Every request is a new edit, so no reply comes from the
    server's memo of recent images except the one a click's second request is meant to find.

    Then ``clients`` threads, each on its own connection, alternate render and probabilities
    requests for ``seconds`` (default 30; quick: 3), every request a different edit. Each
    reply is checked afterwards against the latent, image and scores computed here for its
    own request, so a mix-up between concurrent requests counts as an error, as does any
    status other than 200.

    Returns studio_render_ms, studio_bare_ms, studio_render_vs_bare_ratio,
    studio_bare_with_scores_ms, studio_update_ms, studio_update_vs_bare_with_scores_ratio,
    studio_concurrent_clients, studio_concurrent_seconds, studio_concurrent_requests,
    studio_concurrent_errors, studio_concurrent_requests_per_second,
    studio_concurrent_p50_ms, studio_concurrent_p95_ms.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tlgan.models import load_classifier, load_generator
    from tlgan.studio.app import ServerThread, create_app, encode_png

    G = load_generator(generator, device) if isinstance(generator, str) else generator
    F = load_classifier(classifier, device) if isinstance(classifier, str) else classifier
    axes = axes if axes is not None else _bench_axes(G, F)
    n = requests if requests is not None else (30 if quick else 300)
    duration = seconds if seconds is not None else (3.0 if quick else 30.0)
    app = create_app(G, F, axes, generator_name=G.name, classifier_name=F.name)
    attributes = list(axes.attributes)
    g_device = next(iter(G.parameters()), torch.empty(0)).device
    f_device = next(iter(F.parameters()), torch.empty(0)).device

    faces = G.sample_latents_at(range(n // 10 + 200), seed=0, space=axes.space)

    def bare(i: int, scores: bool = False) -> float:
        latent = faces[i // 10][None]
        t0 = time.perf_counter()
        with torch.inference_mode():
            image = G.synthesize(latent.to(g_device), axes.space)
            if scores:
                F.probabilities(image.to(f_device)).cpu()
        encode_png(image[0].float().cpu())
        return time.perf_counter() - t0

    def check(status: int, payload: bytes, path: str) -> None:
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {payload[:200]!r}")

    with ServerThread(app) as server, ThreadPoolExecutor(1) as helper:
        client, second = _Client(server.port), _Client(server.port)

        def update(i: int) -> None:
            scores = helper.submit(
                second.post, "/api/probabilities", _request_body(i, attributes, direction=-1.0)
            )
            check(
                *client.post("/api/render", _request_body(i, attributes, direction=-1.0, path="/api/render")),
                "/api/render",
            )
            check(*scores.result(), "/api/probabilities")

        try:
            for i in range(5):  # warm-up: allocations, kernel choice, connections, the helper thread
                bare(i)
                bare(i, scores=True)
                update(i)
            times: dict[str, list[float]] = {"bare": [], "scored": [], "render": [], "update": []}
            for i in range(10, 10 + n):
                times["bare"].append(bare(i))
                times["scored"].append(bare(i, scores=True))
                body = _request_body(i, attributes, path="/api/render")
                t0 = time.perf_counter()
                check(*client.post("/api/render", body), "/api/render")
                times["render"].append(time.perf_counter() - t0)
                # The same face with a different edit (direction -1), so nothing is remembered yet.
                t0 = time.perf_counter()
                update(i)
                times["update"].append(time.perf_counter() - t0)
        finally:
            client.close()
            second.close()
        load = _concurrent_load(server.port, attributes, clients, duration, first=10**6)

    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    errors = _check_replies(app.state.studio, G, F, attributes, load.pop("replies"))
    load.pop("latencies")
    load["studio_concurrent_errors"] += errors
    return {
        "studio_render_ms": round(ms["render"], 3),
        "studio_bare_ms": round(ms["bare"], 3),
        "studio_render_vs_bare_ratio": round(ms["render"] / ms["bare"], 3),
        "studio_bare_with_scores_ms": round(ms["scored"], 3),
        "studio_update_ms": round(ms["update"], 3),
        "studio_update_vs_bare_with_scores_ratio": round(ms["update"] / ms["scored"], 3),
        **load,
    }
