"""Studio latency and load: a full /api/render over HTTP against a bare forward pass + PNG encode.

Both sides run in the same process and the same minute, interleaved request by request, so
load from elsewhere on a shared machine hits both alike. The server is a real uvicorn on
127.0.0.1 in a background thread, and the client is the standard library's http.client
over one keep-alive connection, so the figure includes everything a browser would wait for:
HTTP parsing, JSON, validation, editing, the generator, the classifier, PNG and base64.
"""
from __future__ import annotations

import http.client
import json
import logging
import statistics
import threading
import time
from typing import Dict, List, Optional, Union

import torch

from tlgan.axes import FeatureAxes
from tlgan.models.base import Classifier, Generator

log = logging.getLogger(__name__)


def _bench_axes(generator: Generator, classifier: Classifier, seed: int = 0) -> FeatureAxes:
    """Axes for timing only: the generator's true axes if it knows them, else seeded random unit vectors.

    What the axes point at does not change the cost of a request (one vector sum), so the
    benchmark does not spend minutes fitting real ones.
    """
    truth = generator.true_axes()
    if truth is not None:
        return truth
    gen = torch.Generator().manual_seed(seed)
    vectors = torch.randn(len(classifier.attributes), generator.latent_dim("z"), generator=gen)
    vectors = vectors / vectors.norm(dim=1, keepdim=True)
    return FeatureAxes(vectors, list(classifier.attributes), "z", generator.name, "random")


def _request_body(i: int, attributes: List[str], edits_per_face: int = 10) -> bytes:
    """Request i of a page session: face i // edits_per_face, three moves that change every click, one lock.

    A user edits one face for a while (every click re-sends the whole state), so consecutive
    requests share a seed and differ in their amounts.
    """
    a = attributes
    face, click = divmod(i, edits_per_face)
    amounts = {a[face % len(a)]: 0.5 * (click + 1), a[(face + 3) % len(a)]: -1.0, a[(face + 5) % len(a)]: 0.5}
    lock = a[(face + 1) % len(a)]
    amounts.pop(lock, None)
    return json.dumps({"seed": face, "amounts": amounts, "locks": [lock]}).encode()


class _Client:
    """One keep-alive HTTP connection to the studio."""

    def __init__(self, port: int, timeout: float = 60.0):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, path: str, body: bytes):
        self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        return response.status, response.read()

    def close(self):
        self.conn.close()


def bench_studio(quick: bool = False, device: str = "cpu", *,
                 generator: Union[str, Generator] = "toyfaces-gan",
                 classifier: Union[str, Classifier] = "toyfaces-classifier",
                 axes: Optional[FeatureAxes] = None, requests: Optional[int] = None, clients: int = 20,
                 seconds: Optional[float] = None) -> Dict[str, float]:
    """Latency of /api/render vs a bare forward + PNG encode, and errors under concurrent load.

    ``requests`` single-client requests (default 300; quick: 30) are interleaved with as many
    bare renders of the same faces; the medians are reported in milliseconds with their ratio
    (target <= 1.5). The requests follow a page session: ten clicks on each face, each click
    re-sending the face's seed with new amounts and a lock.
    Then ``clients`` threads, each on its own connection, post renders for ``seconds``
    (default 30; quick: 3); every response is checked against the image and latent the same
    request gave when sent alone, so a mix-up between concurrent requests counts as an error.

    Every render also runs the classifier (the page shows the scores with the image), which
    the bare baseline does not; so a third timing, ``studio_bare_with_scores_ms`` (forward,
    classifier, PNG), isolates what the server itself adds: HTTP, JSON, validation, editing.

    Returns studio_render_ms, studio_bare_ms, studio_render_vs_bare_ratio,
    studio_bare_with_scores_ms, studio_render_vs_bare_with_scores_ratio,
    studio_concurrent_clients, studio_concurrent_seconds, studio_concurrent_requests,
    studio_concurrent_errors, studio_concurrent_requests_per_second,
    studio_concurrent_p50_ms, studio_concurrent_p95_ms.
    """
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

    with ServerThread(app) as server:
        client = _Client(server.port)
        try:
            for i in range(5):  # warm-up: allocations, kernel choice, connection
                bare(i)
                bare(i, scores=True)
                client.post("/api/render", _request_body(i, attributes))
            bare_times, scored_times, full_times = [], [], []
            for i in range(10, 10 + n):
                bare_times.append(bare(i))
                scored_times.append(bare(i, scores=True))
                body = _request_body(i, attributes)
                t0 = time.perf_counter()
                status, payload = client.post("/api/render", body)
                full_times.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"/api/render answered {status}: {payload[:200]!r}")
            # The answers each variant must get under load, asked for one at a time.
            variants = [_request_body(1000 + 3 * k, attributes) for k in range(16)]
            expected = []
            for body in variants:
                status, payload = client.post("/api/render", body)
                reply = json.loads(payload)
                expected.append((reply["image"], reply["latent"]))
        finally:
            client.close()
        load = _concurrent_load(server.port, variants, expected, clients, duration)

    render_ms = 1000 * statistics.median(full_times)
    bare_ms = 1000 * statistics.median(bare_times)
    scored_ms = 1000 * statistics.median(scored_times)
    return {
        "studio_render_ms": round(render_ms, 3),
        "studio_bare_ms": round(bare_ms, 3),
        "studio_render_vs_bare_ratio": round(render_ms / bare_ms, 3),
        "studio_bare_with_scores_ms": round(scored_ms, 3),
        "studio_render_vs_bare_with_scores_ratio": round(render_ms / scored_ms, 3),
        **load,
    }


def _concurrent_load(port: int, variants: List[bytes], expected: list, clients: int, duration: float) -> dict:
    errors: List[str] = []
    latencies: List[float] = []
    good = [0]
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(k: int) -> None:
        client = _Client(port)
        mine_lat, mine_err, mine_good = [], [], 0
        start_gate.wait()
        j = k
        try:
            while time.perf_counter() < stop_at[0]:
                v = j % len(variants)
                j += clients
                t0 = time.perf_counter()
                try:
                    status, payload = client.post("/api/render", variants[v])
                except (OSError, http.client.HTTPException) as exc:
                    mine_err.append(f"{type(exc).__name__}: {exc}")
                    client.close()
                    client = _Client(port)
                    continue
                mine_lat.append(time.perf_counter() - t0)
                if status != 200:
                    mine_err.append(f"status {status}: {payload[:120]!r}")
                    continue
                reply = json.loads(payload)
                if (reply["image"], reply["latent"]) != expected[v]:
                    mine_err.append(f"variant {v}: the reply differs from the same request sent alone")
                else:
                    mine_good += 1
        finally:
            client.close()
            with lock:
                latencies.extend(mine_lat)
                errors.extend(mine_err)
                good[0] += mine_good

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    stop_at[0] = t0 + duration
    start_gate.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        log.warning("studio load: %d errors, e.g. %s", len(errors), errors[0])
    ordered = sorted(latencies)
    pick = (lambda q: 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]) if ordered else (lambda q: float("nan"))
    return {
        "studio_concurrent_clients": clients,
        "studio_concurrent_seconds": round(elapsed, 2),
        "studio_concurrent_requests": good[0] + len(errors),
        "studio_concurrent_errors": len(errors),
        "studio_concurrent_requests_per_second": round(good[0] / elapsed, 1),
        "studio_concurrent_p50_ms": round(pick(0.50), 2),
        "studio_concurrent_p95_ms": round(pick(0.95), 2),
    }
