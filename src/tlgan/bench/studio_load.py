"""The studio under a crowd: `tlgan serve` started twice (batching off and on) and driven from here.

One client and then a crowd of closed-loop clients against each server; replies are checked
against a single client's, and the CPU time of the server process and of this one is counted
per request (read from /proc), which bounds the throughput the machine's cores allow.
"""

from __future__ import annotations

import functools
import http.client
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence

import torch

from tlgan.bench.studio_client import (
    PATHS,
    _bad_body,
    _bench_axes,
    _check_replies,
    _Client,
    _concurrent_load,
    _request_body,
)
from tlgan.models.base import Classifier, Generator

log = logging.getLogger(__name__)


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
