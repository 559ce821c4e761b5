"""The studio-load bench (:mod:`tlgan.bench.studio_load`): its load generator, its CPU accounting per
process, and a run against two real `tlgan serve` processes."""

from __future__ import annotations

import os
import time

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bundled():
    from tlgan.bench.studio_client import _bench_axes
    from tlgan.models import load_classifier, load_generator

    G, F = load_generator("toyfaces-gan"), load_classifier("toyfaces-classifier")
    return G, F, _bench_axes(G, F)


def test_the_load_generator_sends_its_share_of_bad_requests_and_stops_by_itself(bundled):
    from tlgan.bench.studio_client import _check_replies, _concurrent_load
    from tlgan.studio.app import ServerThread, create_app

    G, F, axes = bundled
    app = create_app(G, F, axes, max_batch=8)
    with ServerThread(app) as server:
        load = _concurrent_load(
            server.port,
            list(axes.attributes),
            clients=5,
            duration=60.0,
            first=10**6,
            bad_every=10,
            max_requests=100,
        )
    assert (
        load["studio_concurrent_requests"] == 100 and load["studio_concurrent_seconds"] < 60
    )  # the count bound
    bad = load["studio_concurrent_bad_requests"]
    assert 5 <= bad <= 15 and load["studio_concurrent_bad_requests_4xx"] == bad  # one in ten, every one a 4xx
    assert load["studio_concurrent_errors"] == 0 and len(load["replies"]) == 100 - bad
    assert _check_replies(app.state.studio, G, F, list(axes.attributes), load["replies"], exact=False) == 0


# The burner of the CPU-accounting test: it burns BEFORE seconds of CPU, says "ready" and
# blocks; on "go" it burns DURING seconds, sleeps a second (wall time without CPU), writes the
# CPU seconds it burnt after "go" as measured by itself, and blocks until killed.
BURNER = """
import sys, time

def burn(seconds):
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass

burn(float(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()
start = time.process_time()
burn(float(sys.argv[2]))
burnt = time.process_time() - start
time.sleep(1.0)
print(burnt, flush=True)
sys.stdin.readline()
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")
def test_the_load_bench_counts_cpu_time_per_process_and_bounds_throughput_by_it():
    """_cpu_use charges each process the CPU seconds it used during the load, and nothing else.

    The other process reports the CPU seconds it burnt during the load itself, and the
    measure must agree with that to a few clock ticks, however long a loaded machine makes
    the burn take in wall time: the CPU it used before the load (0.3 s) must not count, its
    second of sleep must not count, and this process (which only waits) must show almost
    none. A measure of the wrong process, of wall time, or without the starting reading
    misses by 0.3 s or more.
    """
    import select
    import subprocess
    import sys

    from tlgan.bench.studio_load import _cpu_ceiling, _cpu_use

    burner = subprocess.Popen(
        [sys.executable, "-c", BURNER, "0.3", "0.4"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    def line() -> str:
        ready, _, _ = select.select([burner.stdout], [], [], 120)
        assert ready, "the CPU burner did not answer within 120 s"
        return burner.stdout.readline().strip()

    try:
        assert line() == "ready"  # it has burnt 0.3 s and now waits

        def burn_and_wait():
            burner.stdin.write("go\n")
            burner.stdin.flush()
            return {"burnt": float(line())}

        start = time.monotonic()
        load, server_s, client_s = _cpu_use(burner.pid, burn_and_wait)
        wall = time.monotonic() - start
    finally:
        burner.kill()
        burner.wait()
    burnt = load["burnt"]
    assert burnt >= 0.4 and wall >= burnt + 1.0  # the load held a second of sleep beyond the burn
    assert server_s == pytest.approx(burnt, abs=0.05)  # /proc counts in clock ticks (0.01 s)
    assert 0 <= client_s < 0.2  # this one waited
    result = {"studio_load_clients": 100}
    _cpu_ceiling(result, "on", requests=1000, server_s=4.0, client_s=1.0, cores=2)
    assert result["studio_load_on_server_cpu_ms_per_request"] == 4.0
    assert result["studio_load_on_cpu_ceiling_requests_per_second"] == 400.0  # 2 cores / 5 ms
    assert result["studio_load_on_cpu_floor_mean_latency_ms"] == 250.0  # 100 clients / 400 per second


@pytest.mark.slow
def test_bench_studio_load_drives_two_real_servers():
    """The studio-load bench end to end: two `tlgan serve` processes (about 10 s each to import torch and start)."""
    from tlgan.bench.studio_load import bench_studio_load

    result = bench_studio_load(
        quick=True, clients=4, seconds=1.0, single_requests=10, check=20, model_sizes=(1, 8), slices=2
    )
    for mode in ("off", "on"):
        assert result[f"studio_load_{mode}_errors"] == 0
        assert (
            result[f"studio_load_{mode}_requests"] > 0 and result[f"studio_load_{mode}_checked_replies"] > 0
        )
        assert result[f"studio_load_{mode}_bad_requests"] == result[f"studio_load_{mode}_bad_requests_4xx"]
        assert result[f"studio_load_{mode}_clean_shutdown"] is True
    assert result["studio_load_single_on_vs_off_ratio"] == pytest.approx(
        result["studio_load_on_single_p50_ms"] / result["studio_load_off_single_p50_ms"], rel=0.01
    )
    assert result["studio_load_max_batch"] == 8 and result["studio_load_model_ms_per_image_batch_8"] > 0
    if os.path.exists("/proc/self/stat"):  # the CPU accounting reads /proc
        for mode in ("off", "on"):
            server, client = (
                result[f"studio_load_{mode}_{side}_cpu_ms_per_request"] for side in ("server", "client")
            )
            assert server > 0 and client > 0
            assert result[f"studio_load_{mode}_cpu_ceiling_requests_per_second"] == pytest.approx(
                1000 * result["studio_load_cores"] / (server + client), rel=0.01
            )
