"""The studio benches' HTTP side: request bodies, a keep-alive client, a closed-loop crowd, reply checks.

Shared by :mod:`tlgan.bench.studio` (one in-process server) and :mod:`tlgan.bench.studio_load`
(`tlgan serve` processes).
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time

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


def _request_body(
    i: int,
    attributes: list[str],
    edits_per_face: int = 10,
    direction: float = 1.0,
    path: str = "/api/probabilities",
) -> bytes:
    """Request i of a page session: face i // edits_per_face, three moves that change every click, one lock.

    A user edits one face for a while (every click re-sends the whole state), so consecutive
    requests share a seed and differ in their amounts. ``direction`` -1 walks the first
    attribute the other way: the same face, other edits. For /api/render the body asks for
    PNG bytes, as the page does.
    """
    a = attributes
    face, click = divmod(i, edits_per_face)
    amounts = {
        a[face % len(a)]: direction * 0.5 * (click + 1),
        a[(face + 3) % len(a)]: -1.0,
        a[(face + 5) % len(a)]: 0.5,
    }
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


PATHS = ("/api/render", "/api/probabilities")


def _bad_body(k: int, attributes: list[str], latent_dim: int) -> bytes:
    """A deliberately bad request (cycling through four mistakes a client makes); the server must answer 4xx."""
    kind = (k // 10) % 4
    if kind == 0:
        body: dict = {"seed": k, "amounts": {attributes[0] + "x": 1.0}}  # unknown attribute
    elif kind == 1:
        body = {"latent": [0.0] * (latent_dim - 1)}  # wrong latent length
    elif kind == 2:
        body = {"seed": k, "amounts": {attributes[0]: 1e6}}  # amount out of range
    else:
        body = {"seed": k, "locks": ["Nope"]}  # unknown lock
    return json.dumps(body).encode()


def _concurrent_load(
    port: int,
    attributes: list[str],
    clients: int,
    duration: float,
    first: int,
    *,
    bad_every: int = 0,
    latent_dim: int = 512,
    max_requests: int = 1_000_000,
) -> dict:
    """``clients`` connections posting for ``duration`` seconds; request k is edit ``first + k``.

    Only 127.0.0.1 is contacted, and the load stops by itself after ``duration`` seconds or
    ``max_requests`` requests, whichever comes first. With ``bad_every`` = n, every n-th
    request is deliberately bad (:func:`_bad_body`) and must be answered 4xx.

    Returns the counts, requests_per_second (good requests answered 200, per second) and
    latency percentiles (of every answered request, bad ones included), and under "replies"
    every (path, k, payload) answered 200 for :func:`_check_replies`.
    """
    errors: list[str] = []
    latencies: list[float] = []
    replies: list[tuple] = []
    bad_counts = [0, 0]  # sent, answered 4xx
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]
    budget = [int(max_requests)]

    def worker(c: int) -> None:
        client = _Client(port)
        mine_lat, mine_err, mine_ok, mine_bad = [], [], [], [0, 0]
        start_gate.wait()
        j = 0
        try:
            while time.perf_counter() < stop_at[0]:
                with lock:
                    if budget[0] <= 0:
                        break
                    budget[0] -= 1
                k = first + j * clients + c
                path = PATHS[j % 2]
                j += 1
                bad = bool(bad_every) and (j + c) % bad_every == bad_every - 1  # every client sends its share
                body = (
                    _bad_body(k, attributes, latent_dim) if bad else _request_body(k, attributes, path=path)
                )
                t0 = time.perf_counter()
                try:
                    status, payload = client.post(path, body)
                except (OSError, http.client.HTTPException) as exc:
                    mine_err.append(f"{type(exc).__name__}: {exc}")
                    client.close()
                    client = _Client(port)
                    continue
                mine_lat.append(time.perf_counter() - t0)
                if bad:
                    mine_bad[0] += 1
                    if 400 <= status < 500:
                        mine_bad[1] += 1
                    else:
                        mine_err.append(f"bad request {body[:80]!r} answered {status}: {payload[:120]!r}")
                elif status != 200:
                    mine_err.append(f"{path} status {status}: {payload[:120]!r}")
                else:
                    mine_ok.append((path, k, payload))
        finally:
            client.close()
            with lock:
                latencies.extend(mine_lat)
                errors.extend(mine_err)
                replies.extend(mine_ok)
                bad_counts[0] += mine_bad[0]
                bad_counts[1] += mine_bad[1]

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
    pick = (
        (lambda q: 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))])
        if ordered
        else (lambda q: float("nan"))
    )
    return {
        "studio_concurrent_clients": clients,
        "studio_concurrent_seconds": round(elapsed, 2),
        "studio_concurrent_requests": len(replies) + len(errors) + bad_counts[1],
        "studio_concurrent_errors": len(errors),
        "studio_concurrent_requests_per_second": round(len(replies) / elapsed, 1),
        "studio_concurrent_p50_ms": round(pick(0.50), 2),
        "studio_concurrent_p95_ms": round(pick(0.95), 2),
        "studio_concurrent_p99_ms": round(pick(0.99), 2),
        "studio_concurrent_bad_requests": bad_counts[0],
        "studio_concurrent_bad_requests_4xx": bad_counts[1],
        "replies": replies,
        "latencies": latencies,
    }


def _check_replies(
    studio, G: Generator, F: Classifier, attributes: list[str], replies: list[tuple], exact: bool = True
) -> int:
    """How many replies differ from what their own request should give, computed here one by one.

    The latent comes from the studio's edit of the request (a pure function of it); the
    image and scores from the models called directly (batch 1), not through the server's memo.

    ``exact``: PNG bytes must be equal. A server that batches computes at other batch sizes,
    whose kernels sum in another order (about 1e-6 apart for the bundled models), so with
    ``exact=False`` a PNG may differ by one level in at most 1 % of its values (a reply meant
    for another face differs in most of them). Scores agree within 1e-5 either way.
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
            expected = encode_png(image[0])
            ok = payload == expected or (not exact and _nearly_same_png(payload, expected))
        else:
            reply = json.loads(payload)
            with torch.inference_mode():
                probs = F.probabilities(image.to(f_device)).float().cpu()[0]
            ok = all(
                abs(reply["probabilities"][name] - float(p)) < 1e-5
                for name, p in zip(F.attributes, probs, strict=True)
            )
        if not ok:
            if not wrong:
                log.warning(
                    "studio load: the reply of %s to edit %d differs from the same request computed alone",
                    path,
                    k,
                )
            wrong += 1
    return wrong


def _nearly_same_png(a: bytes, b: bytes) -> bool:
    """Whether two PNGs differ by at most one level, in at most 1 % of their values."""
    import io

    import numpy as np
    from PIL import Image

    try:
        x, y = (np.asarray(Image.open(io.BytesIO(p)).convert("RGB"), dtype=np.int16) for p in (a, b))
    except Exception:  # noqa: BLE001 - not a PNG at all: a wrong reply
        return False
    if x.shape != y.shape:
        return False
    diff = np.abs(x - y)
    return int(diff.max()) <= 1 and float((diff > 0).mean()) <= 0.01


# ----------------------------------------------------------------------------------------------
# studio-load: `tlgan serve` under a crowd, batching off and on.
