"""Studio latency and load: /api/render over HTTP against a bare forward pass + PNG encode.

Both sides run in the same process and the same minute, interleaved request by request, so
load from elsewhere on a shared machine hits both alike. The server is a real uvicorn on
127.0.0.1 in a background thread, and the client is the standard library's http.client
over keep-alive connections, so the figures include everything a browser would wait for:
HTTP parsing, JSON, validation, editing, the generator, PNG and base64 (and the classifier
for the scores, which the page asks for alongside the image).
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


def _request_body(i: int, attributes: List[str], edits_per_face: int = 10, direction: float = 1.0,
                  path: str = "/api/probabilities") -> bytes:
    """Request i of a page session: face i // edits_per_face, three moves that change every click, one lock.

    A user edits one face for a while (every click re-sends the whole state), so consecutive
    requests share a seed and differ in their amounts. ``direction`` -1 walks the first
    attribute the other way: the same face, other edits. For /api/render the body asks for
    PNG bytes, as the page does.
    """
    a = attributes
    face, click = divmod(i, edits_per_face)
    amounts = {a[face % len(a)]: direction * 0.5 * (click + 1), a[(face + 3) % len(a)]: -1.0,
               a[(face + 5) % len(a)]: 0.5}
    lock = a[(face + 1) % len(a)]
    amounts.pop(lock, None)
    body = {"seed": face, "amounts": amounts, "locks": [lock]}
    if path == "/api/render":
        body["format"] = "png"
    return json.dumps(body).encode()


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
            scores = helper.submit(second.post, "/api/probabilities", _request_body(i, attributes, direction=-1.0))
            check(*client.post("/api/render", _request_body(i, attributes, direction=-1.0, path="/api/render")),
                  "/api/render")
            check(*scores.result(), "/api/probabilities")

        try:
            for i in range(5):  # warm-up: allocations, kernel choice, connections, the helper thread
                bare(i)
                bare(i, scores=True)
                update(i)
            times: Dict[str, List[float]] = {"bare": [], "scored": [], "render": [], "update": []}
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


PATHS = ("/api/render", "/api/probabilities")


def _concurrent_load(port: int, attributes: List[str], clients: int, duration: float, first: int) -> dict:
    """``clients`` connections posting for ``duration`` seconds; request k is edit ``first + k``.

    Returns the counts and latencies, and under "replies" every (path, k, payload) answered
    200 for :func:`_check_replies`.
    """
    errors: List[str] = []
    latencies: List[float] = []
    replies: List[tuple] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(c: int) -> None:
        client = _Client(port)
        mine_lat, mine_err, mine_ok = [], [], []
        start_gate.wait()
        j = 0
        try:
            while time.perf_counter() < stop_at[0]:
                k = first + j * clients + c
                path = PATHS[j % 2]
                j += 1
                t0 = time.perf_counter()
                try:
                    status, payload = client.post(path, _request_body(k, attributes, path=path))
                except (OSError, http.client.HTTPException) as exc:
                    mine_err.append(f"{type(exc).__name__}: {exc}")
                    client.close()
                    client = _Client(port)
                    continue
                mine_lat.append(time.perf_counter() - t0)
                if status != 200:
                    mine_err.append(f"{path} status {status}: {payload[:120]!r}")
                else:
                    mine_ok.append((path, k, payload))
        finally:
            client.close()
            with lock:
                latencies.extend(mine_lat)
                errors.extend(mine_err)
                replies.extend(mine_ok)

    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in range(clients)]
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
        "studio_concurrent_requests": len(replies) + len(errors),
        "studio_concurrent_errors": len(errors),
        "studio_concurrent_requests_per_second": round(len(replies) / elapsed, 1),
        "studio_concurrent_p50_ms": round(pick(0.50), 2),
        "studio_concurrent_p95_ms": round(pick(0.95), 2),
        "replies": replies,
    }


def _check_replies(studio, G: Generator, F: Classifier, attributes: List[str], replies: List[tuple]) -> int:
    """How many replies differ from what their own request should give, computed here one by one.

    The latent comes from the studio's edit of the request (a pure function of it); the
    image and scores from the models called directly, not through the server's memo.
    """
    from tlgan.studio.app import encode_png

    wrong = 0
    g_device = next(iter(G.parameters()), torch.empty(0)).device
    f_device = next(iter(F.parameters()), torch.empty(0)).device
    for path, k, payload in replies:
        request = json.loads(_request_body(k, attributes, path=path))
        amounts, locks = studio.check_moves(request["amounts"], request["locks"])
        latent = studio.edit(studio.base_latent(seed=request["seed"]), amounts, locks)
        with torch.inference_mode():
            image = G.synthesize(latent[None].to(g_device), studio.space).float().cpu()
        if path == "/api/render":
            ok = payload == encode_png(image[0])
        else:
            reply = json.loads(payload)
            with torch.inference_mode():
                probs = F.probabilities(image.to(f_device)).float().cpu()[0]
            ok = all(abs(reply["probabilities"][name] - float(p)) < 1e-5 for name, p in zip(F.attributes, probs))
        if not ok:
            if not wrong:
                log.warning("studio load: the reply of %s to edit %d differs from the same request computed alone",
                            path, k)
            wrong += 1
    return wrong
