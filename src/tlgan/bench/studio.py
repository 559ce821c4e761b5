"""Studio latency and load: /api/render over HTTP against a bare forward pass + PNG encode.

Both sides run in the same process and the same minute, interleaved request by request, so
load from elsewhere on a shared machine hits both alike. The server is a real uvicorn on
127.0.0.1 in a background thread, and the client is the standard library's http.client
over keep-alive connections, so the figures include everything a browser would wait for:
HTTP parsing, JSON, validation, editing, the generator, PNG and base64 (and the classifier
for the scores, which the page asks for alongside the image).

The studio-load section (:func:`bench_studio_load`) runs `tlgan serve` itself, twice, with
batching off and on, and drives both from this process with one client and then a crowd.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import statistics
import threading
import time
from collections.abc import Callable, Sequence

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


def _start_server(
    generator: str,
    classifier: str,
    axes_path: str,
    device: str,
    max_batch: int,
    batch_wait_ms: float,
    log_path: str,
):
    """`tlgan serve` in a child process on 127.0.0.1 and a free port; :func:`_wait_for_server` gives its port."""
    import subprocess
    import sys

    command = [
        sys.executable,
        "-c",
        "from tlgan.cli import main; main()",
        "serve",
        "--generator",
        generator,
        "--classifier",
        classifier,
        "--axes",
        axes_path,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--max-batch",
        str(max_batch),
        "--batch-wait-ms",
        str(batch_wait_ms),
        "--device",
        device,
    ]
    with open(log_path, "wb") as errors:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)


def _wait_for_server(process, log_path: str, start_timeout: float = 180.0) -> int:
    """The port of a server from :func:`_start_server`, once it answers; TlganError if it does not start."""
    import re

    from tlgan.errors import TlganError

    found: list[int] = []

    def read_url():
        for line in process.stdout:
            match = re.search(rb"http://127\.0\.0\.1:(\d+)/", line)
            if match:
                found.append(int(match.group(1)))
                return

    reader = threading.Thread(target=read_url, daemon=True)
    reader.start()
    reader.join(start_timeout)
    deadline = time.monotonic() + start_timeout
    while found:  # the address is printed before uvicorn listens
        try:
            conn = http.client.HTTPConnection("127.0.0.1", found[0], timeout=5)
            conn.request("GET", "/api/attributes")
            conn.getresponse().read()
            conn.close()
            return found[0]
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    process.wait()
    with open(log_path, "rb") as f:
        tail = f.read()[-2000:].decode(errors="replace")
    raise TlganError(f"the studio server for the load benchmark did not start: {tail}")


def _stop_server(process, log_path: str) -> bool:
    """Ctrl+C the server (uvicorn's graceful shutdown, which closes the batcher); whether it stopped cleanly.

    Clean: it exited by itself within 30 s with the CLI's status for an interrupt (130) or 0,
    and wrote no traceback.
    """
    import signal
    import subprocess

    process.send_signal(signal.SIGINT)
    try:
        status = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    with open(log_path, "rb") as f:
        text = f.read()
    if b"Traceback" in text:
        log.warning(
            "studio load: the server's log holds a traceback: %s", text[-2000:].decode(errors="replace")
        )
    return status in (0, 130) and b"Traceback" not in text


def _model_ms_per_image(
    G: Generator, F: Classifier, space: str, sizes=(1, 2, 4, 8, 16, 32), repeats: int = 5
) -> dict[str, float]:
    """Generator + classifier time per image at each batch size (best of ``repeats``): what batching can gain."""
    g_device = next(iter(G.parameters()), torch.empty(0)).device
    f_device = next(iter(F.parameters()), torch.empty(0)).device
    latents = G.sample_latents_at(range(max(sizes)), seed=0, space=space)
    out = {}
    with torch.inference_mode():
        for n in sizes:
            best = float("inf")
            for r in range(repeats + 1):
                t0 = time.perf_counter()
                F.probabilities(G.synthesize(latents[:n].to(g_device), space).to(f_device)).cpu()
                if r:  # the first is a warm-up
                    best = min(best, time.perf_counter() - t0)
            out[f"studio_load_model_ms_per_image_batch_{n}"] = round(1000 * best / n, 3)
    return out


def _process_cpu_seconds(pid: int | None = None) -> float | None:
    """CPU seconds (user + system) a process has used so far: ``pid`` from /proc (Linux), None = this process.

    None where /proc is not there to read.
    """
    import os

    if pid is None:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime in clock ticks


def _cpu_use(server_pid: int, load: Callable[[], dict]) -> tuple[dict, float | None, float | None]:
    """``load()``'s result, with the CPU seconds the server process and this process (the load generator) used meanwhile."""
    before = _process_cpu_seconds(server_pid), _process_cpu_seconds()
    result = load()
    after = _process_cpu_seconds(server_pid), _process_cpu_seconds()
    server = after[0] - before[0] if None not in (before[0], after[0]) else None
    return result, server, after[1] - before[1]


def _cpu_ceiling(
    result: dict[str, float], mode: str, requests: int, server_s: float | None, client_s: float, cores: int
) -> None:
    """Add what each request cost in CPU time, and the requests per second the machine's cores could serve at most.

    ``studio_load_{mode}_server_cpu_ms_per_request`` and ``..._client_cpu_ms_per_request`` divide
    the CPU time of the server process and of the load generator over the crowd's slices by the
    requests answered. With every core busy and nothing else running, ``cores`` / (their sum) is
    the most requests per second this machine could answer with the load generator on it:
    ``studio_load_{mode}_cpu_ceiling_requests_per_second``. With ``clients`` closed-loop clients
    the mean latency is clients / throughput, so the latency the ceiling allows is
    ``studio_load_{mode}_cpu_floor_mean_latency_ms``.
    """
    if server_s is None or requests <= 0:
        return
    server_ms, client_ms = 1000 * server_s / requests, 1000 * client_s / requests
    ceiling = 1000 * cores / (server_ms + client_ms)
    result[f"studio_load_{mode}_server_cpu_ms_per_request"] = round(server_ms, 3)
    result[f"studio_load_{mode}_client_cpu_ms_per_request"] = round(client_ms, 3)
    result[f"studio_load_{mode}_cpu_ceiling_requests_per_second"] = round(ceiling, 1)
    result[f"studio_load_{mode}_cpu_floor_mean_latency_ms"] = round(
        1000 * result["studio_load_clients"] / ceiling, 1
    )


def _merge_loads(loads: list[dict]) -> dict:
    """Several :func:`_concurrent_load` results against one server as one: counts added, latencies pooled."""
    latencies = sorted(t for load in loads for t in load["latencies"])
    replies = [r for load in loads for r in load["replies"]]
    seconds = sum(load["studio_concurrent_seconds"] for load in loads)

    def pick(q: float) -> float:
        return (
            round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)
            if latencies
            else float("nan")
        )

    total = {
        key: sum(load[f"studio_concurrent_{key}"] for load in loads)
        for key in ("requests", "errors", "bad_requests", "bad_requests_4xx")
    }
    return {
        "clients": loads[0]["studio_concurrent_clients"],
        "seconds": round(seconds, 2),
        **total,
        "requests_per_second": round(len(replies) / seconds, 1),
        "p50_ms": pick(0.50),
        "p95_ms": pick(0.95),
        "p99_ms": pick(0.99),
        "replies": replies,
    }


def bench_studio_load(
    quick: bool = False,
    device: str = "cpu",
    *,
    generator: str = "toyfaces-gan",
    classifier: str = "toyfaces-classifier",
    clients: int = 100,
    seconds: float | None = None,
    single_requests: int | None = None,
    max_batch: int | None = None,
    batch_wait_ms: float | None = None,
    bad_every: int = 10,
    check: int | None = None,
    model_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32),
    slices: int = 3,
) -> dict[str, float]:
    """`tlgan serve` under a crowd, batching off (``--max-batch 1``, the unbatched path) and on, in one run.

    Two servers are started as child processes on 127.0.0.1 (the same models and axes;
    one with ``--max-batch 1``, one with ``max_batch`` / ``batch_wait_ms``, default the
    studio's defaults) and driven from this process:

    - 1 client: ``single_requests`` rounds (default 300; quick: 30), each sending the same
      request to the unbatched and the batched server (which one first alternates), so load
      from elsewhere hits both alike; ``studio_load_{off,on}_single_p50_ms`` are the medians of the answered
      good requests, ``studio_load_single_on_vs_off_ratio`` their ratio (target <= 1.1);
    - ``clients`` clients (default 100) for ``seconds`` (default 30; quick: 3) against each
      server, in ``slices`` turns that alternate between them (off, on, on, off, ...), half renders and half probabilities requests, every ``bad_every``-th
      one deliberately bad: ``studio_load_{off,on}_{requests_per_second, p50_ms, p95_ms,
      p99_ms, errors, bad_requests, bad_requests_4xx}``, and
      ``studio_load_throughput_on_vs_off_ratio`` (target >= 2, with on p95 <= 300 ms).

    Errors count failed connections, good requests not answered 200, bad ones not answered
    4xx, and replies that differ from their own request computed alone (``check`` replies
    per server, default 600; quick: 50, drawn evenly; see :func:`_check_replies`).
    ``studio_load_model_ms_per_image_batch_N`` times the models alone at batch N, the
    measurement behind the default ``max_batch``. Where /proc can be read (Linux), the CPU time
    each request cost the server and the load generator, and the throughput and latency that
    bounds on this machine's ``studio_load_cores`` cores (see :func:`_cpu_ceiling`). ``studio_load_{off,on}_clean_shutdown``:
    whether each server stopped cleanly on Ctrl+C (see :func:`_stop_server`).
    """
    import os
    import tempfile

    from tlgan.models import load_classifier, load_generator
    from tlgan.studio.app import Studio
    from tlgan.studio.batcher import DEFAULT_MAX_BATCH, DEFAULT_WAIT_MS

    G = load_generator(generator, device)
    F = load_classifier(classifier, device)
    axes = _bench_axes(G, F)
    rounds = single_requests if single_requests is not None else (30 if quick else 300)
    duration = seconds if seconds is not None else (3.0 if quick else 30.0)
    n_check = check if check is not None else (50 if quick else 600)
    settings = {
        "off": (1, 0.0),
        "on": (max_batch or DEFAULT_MAX_BATCH, DEFAULT_WAIT_MS if batch_wait_ms is None else batch_wait_ms),
    }
    studio = Studio(G, F, axes, max_batch=1)
    attributes = list(axes.attributes)
    result: dict[str, float] = {
        "studio_load_max_batch": settings["on"][0],
        "studio_load_batch_wait_ms": settings["on"][1],
        "studio_load_clients": clients,
        "studio_load_bad_every": bad_every,
    }
    result.update(_model_ms_per_image(G, F, axes.space, sizes=tuple(model_sizes), repeats=2 if quick else 5))

    with tempfile.TemporaryDirectory(prefix="tlgan-bench-") as tmp:
        axes_path = f"{tmp}/axes.safetensors"
        axes.save(axes_path)
        servers = {}
        try:
            for mode, (mb, wait) in settings.items():  # both start at once
                servers[mode] = _start_server(
                    generator, classifier, axes_path, device, mb, wait, f"{tmp}/{mode}.log"
                )
            ports = {
                mode: _wait_for_server(process, f"{tmp}/{mode}.log") for mode, process in servers.items()
            }
            single = {mode: _Client(port) for mode, port in ports.items()}
            times: dict[str, list[float]] = {"off": [], "on": []}
            try:
                for i in range(-10, rounds):  # ten warm-up rounds
                    path = PATHS[i % 2]
                    bad = bool(bad_every) and i % bad_every == bad_every - 1
                    body = (
                        _bad_body(i + 10**5, attributes, studio.latent_dim)
                        if bad
                        else _request_body(i + 10**5, attributes, path=path)
                    )
                    for mode in ("off", "on") if i % 4 < 2 else ("on", "off"):  # neither always goes first
                        t0 = time.perf_counter()
                        status, payload = single[mode].post(path, body)
                        elapsed = time.perf_counter() - t0
                        if (400 <= status < 500) != bad or (not bad and status != 200):
                            raise RuntimeError(
                                f"single client: {mode} server answered {status}: {payload[:200]!r}"
                            )
                        if i >= 0 and not bad:
                            times[mode].append(elapsed)
            finally:
                for c in single.values():
                    c.close()
            for mode in ("off", "on"):
                result[f"studio_load_{mode}_single_p50_ms"] = round(1000 * statistics.median(times[mode]), 3)
            result["studio_load_single_on_vs_off_ratio"] = round(
                result["studio_load_on_single_p50_ms"] / result["studio_load_off_single_p50_ms"], 3
            )

            # The crowd alternates between the servers in slices, so a change in the machine's
            # load from elsewhere falls on both.
            loads: dict[str, list[dict]] = {"off": [], "on": []}
            cpu: dict[str, list[tuple]] = {
                "off": [],
                "on": [],
            }  # per slice: (server, load generator) CPU seconds
            for piece in range(slices):
                for mode in ("off", "on") if piece % 2 == 0 else ("on", "off"):
                    load, server_s, client_s = _cpu_use(
                        servers[mode].pid,
                        functools.partial(
                            _concurrent_load,
                            ports[mode],
                            attributes,
                            clients,
                            duration / slices,
                            bad_every=bad_every,
                            first=10**6 * (2 + 2 * piece + (mode == "on")),
                            latent_dim=studio.latent_dim,
                        ),
                    )
                    loads[mode].append(load)
                    cpu[mode].append((server_s, client_s))
            cores = (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            )
            result["studio_load_cores"] = cores
            for mode in ("off", "on"):
                merged = _merge_loads(loads[mode])
                server_s, client_s = zip(*cpu[mode], strict=True)
                _cpu_ceiling(
                    result,
                    mode,
                    merged["requests"],
                    None if None in server_s else sum(server_s),
                    sum(client_s),
                    cores,
                )
                replies = merged.pop("replies")
                step = max(1, len(replies) // max(1, n_check))
                checked = replies[::step][:n_check]
                merged["errors"] += _check_replies(studio, G, F, attributes, checked, exact=(mode == "off"))
                merged["checked_replies"] = len(checked)
                for key, value in merged.items():
                    result[f"studio_load_{mode}_{key}"] = value
        finally:
            for mode, process in servers.items():
                result[f"studio_load_{mode}_clean_shutdown"] = _stop_server(process, f"{tmp}/{mode}.log")
    result["studio_load_throughput_on_vs_off_ratio"] = round(
        result["studio_load_on_requests_per_second"]
        / max(1e-9, result["studio_load_off_requests_per_second"]),
        3,
    )
    return result
