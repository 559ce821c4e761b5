"""The studio's dynamic batcher: on its own (asyncio, a recording function) and behind a real server.

Bit-for-bit equality of a batched forward pass with a batch-1 pass does not hold on a CPU
(kernels sum in a different order for other batch sizes: about 1e-6 for the bundled
models). What the server guarantees, and what is checked here bit for bit, is that a
request's answer is what the same request gives computed alone in a batch of the same size
and slot, the other slots holding unrelated faces: no answer depends on what the other
requests of its batch asked for, and no answer goes to the wrong request.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from tlgan.errors import TlganError
from tlgan.studio.batcher import Batcher, BatcherClosed, BatchFailed

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# The batcher alone.


class Recorder:
    """fn(items) -> [f"{item}!"]: records every batch; the first batch can be held until released."""

    def __init__(self, poison=None, hold_first=False):
        self.batches = []
        self.poison = poison
        self.release = asyncio.Event() if hold_first else None

    def __call__(self, items):
        self.batches.append(list(items))
        if self.poison is not None and self.poison in items:
            raise ValueError("poisoned batch")
        return [f"{item}!" for item in items]

    async def run(self, fn, items):
        if self.release is not None and len(self.batches) == 0:
            await self.release.wait()  # the first batch "computes" until released
        return fn(items)


async def settle(batcher, n):
    """Wait until n items are queued behind the running batch."""
    for _ in range(1000):
        if batcher.pending() >= n:
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"only {batcher.pending()} queued")


def test_requests_arriving_during_a_batch_share_the_next_one_and_get_their_own_results():
    async def scenario():
        rec = Recorder(hold_first=True)
        batcher = Batcher(rec, max_batch=4, wait_ms=50, run=rec.run)
        first = asyncio.create_task(batcher.submit("a"))
        await asyncio.sleep(0.01)  # "a" is computing (held)
        later = [asyncio.create_task(batcher.submit(x)) for x in "bcdefg"]
        await settle(batcher, 6)
        rec.release.set()
        results = await asyncio.gather(first, *later)
        return rec.batches, results

    batches, results = asyncio.run(scenario())
    assert results == ["a!", "b!", "c!", "d!", "e!", "f!", "g!"]
    assert batches == [["a"], ["b", "c", "d", "e"], ["f", "g"]]  # full batches of max_batch, in arrival order


def test_a_lone_request_does_not_wait_for_the_deadline():
    async def scenario():
        batcher = Batcher(Recorder(), max_batch=8, wait_ms=60_000)
        return await asyncio.wait_for(batcher.submit("x"), timeout=5)

    assert asyncio.run(scenario()) == "x!"


def test_a_malformed_item_fails_alone_and_the_rest_of_its_batch_is_answered():
    def check(item):
        if not item.isalpha():
            raise TlganError(f"item {item!r} is not a word")
        return item.upper()

    async def scenario():
        rec = Recorder(hold_first=True)
        batcher = Batcher(rec, max_batch=8, wait_ms=50, check=check, run=rec.run)
        first = asyncio.create_task(batcher.submit("a"))
        await asyncio.sleep(0.01)
        tasks = [asyncio.create_task(batcher.submit(x)) for x in ("b", "7", "c")]
        await asyncio.sleep(0.01)
        rec.release.set()
        return rec.batches, await asyncio.gather(first, *tasks, return_exceptions=True)

    batches, results = asyncio.run(scenario())
    assert results[0] == "A!" and results[1] == "B!" and results[3] == "C!"
    assert isinstance(results[2], TlganError) and "'7' is not a word" in str(results[2])
    assert batches == [["A"], ["B", "C"]]


def test_a_model_call_that_raises_fails_only_its_batch():
    async def scenario():
        rec = Recorder(poison="p", hold_first=True)
        batcher = Batcher(rec, max_batch=3, wait_ms=50, run=rec.run)
        first = asyncio.create_task(batcher.submit("a"))
        await asyncio.sleep(0.01)
        tasks = [asyncio.create_task(batcher.submit(x)) for x in ("b", "p", "c", "d", "e")]
        await settle(batcher, 5)
        rec.release.set()
        results = await asyncio.gather(first, *tasks, return_exceptions=True)
        after = await batcher.submit("z")  # the batcher goes on
        return rec.batches, results, after

    batches, results, after = asyncio.run(scenario())
    assert batches == [["a"], ["b", "p", "c"], ["d", "e"], ["z"]]
    assert results[0] == "a!" and results[4:] == ["d!", "e!"] and after == "z!"
    for failed in results[1:4]:
        assert (
            isinstance(failed, BatchFailed)
            and failed.size == 3
            and "ValueError: poisoned batch" in str(failed)
        )


def test_a_caller_that_gives_up_is_skipped_and_holds_up_nobody():
    async def scenario():
        rec = Recorder(hold_first=True)
        batcher = Batcher(rec, max_batch=8, wait_ms=50, run=rec.run)
        first = asyncio.create_task(batcher.submit("a"))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(batcher.submit("gone"))
        kept = asyncio.create_task(batcher.submit("kept"))
        await settle(batcher, 2)
        gone.cancel()  # its client went away
        rec.release.set()
        return rec.batches, await first, await kept, gone.cancelled()

    batches, first, kept, cancelled = asyncio.run(scenario())
    assert cancelled and first == "a!" and kept == "kept!"
    assert batches == [["a"], ["kept"]]


def test_closing_fails_queued_requests_and_refuses_new_ones():
    async def scenario():
        rec = Recorder(hold_first=True)
        batcher = Batcher(rec, max_batch=8, wait_ms=50, run=rec.run)
        first = asyncio.create_task(batcher.submit("a"))
        await asyncio.sleep(0.01)
        queued = asyncio.create_task(batcher.submit("b"))
        await settle(batcher, 1)
        closing = asyncio.create_task(batcher.aclose())
        await asyncio.sleep(0.01)
        rec.release.set()  # the running batch finishes
        await closing
        results = await asyncio.gather(first, queued, return_exceptions=True)
        with pytest.raises(BatcherClosed):
            await batcher.submit("c")
        tasks = [q.task for q in batcher._queues.values()]
        return results, rec.batches, tasks

    results, batches, tasks = asyncio.run(scenario())
    assert results[0] == "a!" and isinstance(results[1], BatcherClosed)
    assert batches == [["a"]] and all(t.done() for t in tasks)


def test_batcher_settings_are_checked():
    with pytest.raises(TlganError, match="max_batch must be at least 1"):
        Batcher(Recorder(), max_batch=0)
    with pytest.raises(TlganError, match="batch wait"):
        Batcher(Recorder(), wait_ms=-1)


# ----------------------------------------------------------------------------------------------
# Behind a real server, with the bundled models.


class Wrapping(torch.nn.Module):
    """Wraps a model for a test to watch its calls; what the wrapper does not define itself
    (name, sizes, latent_shape, sample_latents_at, ...) is the wrapped model's."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)


class Recording(Wrapping):
    """Wraps a generator or classifier: records each batch it gets; ``hold``: the first call waits for ``release``."""

    def __init__(self, inner, method, hold=False, poison=None):
        super().__init__(inner)
        self.method, self.hold, self.poison = method, hold, poison
        self.entered, self.release = threading.Event(), threading.Event()
        self.batches = []

    def _call(self, x, *args):
        if not self.batches and self.hold:
            self.entered.set()
            assert self.release.wait(30)  # the server's loop is blocked: requests pile up meanwhile
        self.batches.append(x.detach().cpu().clone())
        if self.poison is not None and any(torch.equal(row, self.poison) for row in x.cpu()):
            raise RuntimeError("the model broke on this batch")
        return getattr(self.inner, self.method)(x, *args)

    def synthesize(self, latents, space="z"):
        return self._call(latents, space)

    def probabilities(self, images):
        return self._call(images)


@pytest.fixture(scope="module")
def bundled():
    from tlgan.bench.studio_client import _bench_axes
    from tlgan.models import load_classifier, load_generator

    G, F = load_generator("toyfaces-gan"), load_classifier("toyfaces-classifier")
    return G, F, _bench_axes(G, F)


def requests_with_everything(n):
    """Different seeds, amounts and locks; some with the original face, some with scores; render and probabilities."""
    attributes = ["Smiling", "Male", "Young", "Beard", "Bangs", "Eyeglasses"]
    out = []
    for k in range(n):
        body = {
            "seed": 100 + k,
            "amounts": {attributes[k % 6]: 0.25 * (k % 9) - 1.0, attributes[(k + 2) % 6]: 1.5},
            "locks": [attributes[(k + 1) % 6]] if k % 3 else [],
        }
        if k % 4 == 1:
            body["include_original"] = True
        if k % 2 == 0:
            out.append(("/api/render", {**body, "scores": k % 4 == 0}))
        else:
            out.append(("/api/probabilities", body))
    return out


def post_all(port, requests, workers=12):
    def one(item):
        path, body = item
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, requests))


def post_held(port, model, requests):
    """Post ``requests`` while ``model``'s first call (one extra request) is held, then release it.

    Every request has been sent before the model is free again, so they queue together and
    form batches whatever the machine's load; returns their (status, payload) in order.
    """
    with ThreadPoolExecutor(1) as pool:
        head = pool.submit(post_all, port, [("/api/render", {"seed": 999, "format": "png"})], 1)
        assert model.entered.wait(30)
        conns = []
        for path, body in requests:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            conns.append(conn)
        model.release.set()
        replies = []
        for conn in conns:
            response = conn.getresponse()
            replies.append((response.status, response.read()))
            conn.close()
        assert head.result()[0][0] == 200
    return replies


def find_slots(batches, row, atol=0.0):
    """Every (batch, slot) whose input is ``row``: exactly, or within ``atol`` (the same face drawn
    in another batch differs in the last bits, and the studio may have answered with either)."""
    found = [
        (batch, slot)
        for batch in batches
        for slot, candidate in enumerate(batch)
        if (torch.equal(candidate, row) if atol == 0 else float((candidate - row).abs().max()) <= atol)
    ]
    assert found, "this input never reached the model"
    return found


def answers_alone(model_call, batches, row, filler, atol=0.0):
    """``row`` computed alone (:func:`alone`) at each batch slot where the model saw it."""
    return [alone(model_call, batch, slot, filler) for batch, slot in find_slots(batches, row, atol)]


def alone(model_call, batch, slot, filler):
    """``batch[slot]`` computed with every other slot holding an unrelated input from ``filler``."""
    stand_in = filler[: len(batch)].clone()
    stand_in[slot] = batch[slot]
    with torch.inference_mode():
        return model_call(stand_in)[slot].float().cpu()


def test_concurrent_answers_equal_each_request_computed_alone_bit_for_bit(bundled):
    from tlgan.studio.app import ServerThread, create_app, encode_png

    G, F, axes = bundled
    RG, RF = Recording(G, "synthesize", hold=True), Recording(F, "probabilities")
    app = create_app(RG, RF, axes, max_batch=8, batch_wait_ms=20)
    studio = app.state.studio
    requests = requests_with_everything(48)
    with ServerThread(app) as server:
        replies = post_held(server.port, RG, requests)
    assert all(status == 200 for status, _ in replies), [r for r in replies if r[0] != 200][:2]
    assert max(len(b) for b in RG.batches) > 1 and max(len(b) for b in RF.batches) > 1  # it did batch

    filler_z = G.sample_latents_at(range(5000, 5016), seed=3)
    with torch.inference_mode():
        filler_images = G.synthesize(filler_z)
    for (path, body), (_, payload) in zip(requests, replies, strict=True):
        base = studio.base_latent(seed=body["seed"])
        latent = studio.edit(base, *studio.check_moves(body["amounts"], body["locks"]))
        faces = [latent, base] if body.get("include_original") else [latent]
        images = [answers_alone(G.synthesize, RG.batches, z, filler_z) for z in faces]
        reply = json.loads(payload)
        if path == "/api/render":
            assert torch.equal(torch.tensor(reply["latent"], dtype=torch.float32), latent)
            keys = ["image", "original_image"][: len(faces)]
            for key, candidates in zip(keys, images, strict=True):
                assert base64.b64decode(reply[key].split(",", 1)[1]) in [encode_png(i) for i in candidates]
        if path == "/api/probabilities" or body.get("scores"):
            keys = ["probabilities", "original_probabilities"][: len(faces)]
            for key, candidates in zip(keys, images, strict=True):
                probs = [
                    studio.probabilities_dict(p)
                    for image in candidates
                    for p in answers_alone(F.probabilities, RF.batches, image, filler_images, atol=1e-4)
                ]
                assert reply[key] in probs


def test_a_bad_request_among_concurrent_ones_fails_alone(bundled):
    from tlgan.studio.app import ServerThread, create_app

    G, F, axes = bundled
    RG = Recording(G, "synthesize", hold=True)
    app = create_app(RG, F, axes, max_batch=8)
    good = [("/api/render", {"seed": s, "format": "png"}) for s in range(10)]
    bad = [
        ("/api/render", {"latent": [0.0] * 511}),
        ("/api/probabilities", {"seed": 1, "amounts": {"Smilin": 1}}),
    ]
    mixed = good[:5] + bad[:1] + good[5:] + bad[1:]
    with ServerThread(app) as server:
        replies = post_held(server.port, RG, mixed)
    statuses = [status for status, _ in replies]
    assert statuses[5] == 422 and b"needs 512" in replies[5][1]
    assert statuses[-1] == 422 and b"did you mean 'Smiling'" in replies[-1][1]
    assert all(
        status == 200 and payload.startswith(b"\x89PNG") for status, payload in replies[:5] + replies[6:-1]
    )
    assert max(len(b) for b in RG.batches) > 1


def test_a_model_call_that_raises_fails_only_its_batch_and_the_server_goes_on(bundled):
    from tlgan.studio.app import ServerThread, create_app

    G, F, axes = bundled
    poison = G.sample_latents_at([13], seed=0)[0]  # face 13, unedited
    requests = [("/api/render", {"seed": s, "format": "png"}) for s in range(6, 22)]
    # Which requests share a batch depends on when the server parses them; the poisoned face
    # must share its batch with others for this test to say anything, so try a few servers.
    for _ in range(4):
        RG = Recording(G, "synthesize", hold=True, poison=poison)
        app = create_app(RG, F, axes, max_batch=4)
        with ServerThread(app) as server:
            replies = post_held(server.port, RG, requests)
            status, after = post_all(server.port, [("/api/render", {"seed": 30, "format": "png"})])[0]
        assert status == 200 and after.startswith(b"\x89PNG")
        poisoned = [batch for batch in RG.batches if any(torch.equal(row, poison) for row in batch)]
        assert len(poisoned) == 1
        if len(poisoned[0]) > 1:
            break
    assert len(poisoned[0]) > 1
    studio = app.state.studio
    for (_, body), (status, payload) in zip(requests, replies, strict=True):
        in_poisoned = any(torch.equal(row, studio.base_latent(seed=body["seed"])) for row in poisoned[0])
        if in_poisoned:
            assert status == 500
            assert "the model failed on a batch of" in json.loads(payload)["detail"]
        else:
            assert status == 200 and payload.startswith(b"\x89PNG")


def test_a_client_that_disconnects_holds_up_nobody(bundled):
    from tlgan.studio.app import ServerThread, create_app

    G, F, axes = bundled
    RG = Recording(G, "synthesize", hold=True)
    app = create_app(RG, F, axes, max_batch=8)
    with ServerThread(app) as server:

        def hang_up(seed):  # send a request and go away before the answer
            body = json.dumps({"seed": seed, "format": "png"}).encode()
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            sock.sendall(
                b"POST /api/render HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            sock.close()

        def hang_ups_then_release(_):
            for seed in (50, 51, 52, 53):
                hang_up(seed)

        original = RG.release.set
        RG.release.set = lambda: (hang_ups_then_release(None), original())  # they queue with the others
        replies = post_held(
            server.port, RG, [("/api/render", {"seed": s, "format": "png"}) for s in range(8)]
        )
        again = post_all(server.port, [("/api/render", {"seed": 40, "format": "png"})])
    assert all(status == 200 and payload.startswith(b"\x89PNG") for status, payload in replies + again)
    studio = app.state.studio
    gone = [studio.base_latent(seed=s) for s in (50, 51, 52, 53)]
    shared = [b for b in RG.batches if any(torch.equal(row, z) for row in b for z in gone)]
    # The hung-up requests reached the model in batches with others (how the last few split
    # into batches depends on the machine's load, so one batch of several is the proof asked for).
    assert shared and any(len(b) > 1 for b in shared)


def test_the_batcher_shuts_down_with_the_server(bundled):
    from tlgan.studio.app import ServerThread, create_app

    G, F, axes = bundled
    app = create_app(G, F, axes, max_batch=8)
    studio = app.state.studio
    with ServerThread(app) as server:
        assert all(status == 200 for status, _ in post_all(server.port, requests_with_everything(8)))
        thread = server.thread
    assert not thread.is_alive()
    assert studio.draw_batcher.closed and studio.score_batcher.closed
    assert all(
        q.task is None or q.task.done()
        for b in (studio.draw_batcher, studio.score_batcher)
        for q in b._queues.values()
    )
    with pytest.raises(BatcherClosed):
        asyncio.run(studio.draw_batcher.submit(torch.zeros(512)))


def test_batching_off_is_the_unbatched_path(bundled):
    """max_batch=1: every request makes its own model call (today's path), with the same answers as batch 1."""
    from fastapi.testclient import TestClient

    from tlgan.studio.app import create_app, encode_png

    G, F, axes = bundled
    RG = Recording(G, "synthesize")
    client = TestClient(create_app(RG, F, axes, max_batch=1))
    png = client.post("/api/render", json={"seed": 8, "format": "png"}).content
    with torch.inference_mode():
        assert png == encode_png(G.synthesize(G.sample_latents_at([8], seed=0))[0])
    assert [len(b) for b in RG.batches] == [1]


def test_serve_has_the_batching_options():
    from click.testing import CliRunner

    from tlgan.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0 and "--max-batch" in result.output and "--batch-wait-ms" in result.output
    bad = CliRunner().invoke(cli, ["serve", "--max-batch", "0"])
    assert bad.exit_code != 0 and "max-batch" in bad.output


def test_a_lone_item_computes_inline_and_a_batch_in_the_model_thread(bundled):
    from tlgan.studio.server import Studio

    G, F, axes = bundled
    studio = Studio(G, F, axes)
    loop_thread = threading.get_ident()

    def where(items):
        return [threading.get_ident() for _ in items]

    async def scenario():
        lone = await studio.run_batch(where, ["a"])
        several = await studio.run_batch(where, ["a", "b"])
        await studio.aclose()
        return lone, several

    lone, several = asyncio.run(scenario())
    assert lone == [loop_thread] and several[0] == several[1] != loop_thread
    assert studio._model_thread is None  # shut down with the studio


def test_a_stylegan2_in_w_is_batched_with_each_answer_its_own(bundled):
    """The same check on a (tiny, seeded) StyleGAN2 generator edited in w: batched, and bit for bit per slot."""
    from stylegan_fixtures import tiny_stylegan2
    from tlgan.axes import FeatureAxes
    from tlgan.models import ModuleClassifier
    from tlgan.studio.app import ServerThread, create_app, encode_png

    G = tiny_stylegan2(0)
    axes = FeatureAxes(
        torch.nn.functional.normalize(
            torch.randn(2, G.latent_dim("w"), generator=torch.Generator().manual_seed(2)), dim=1
        ),
        ["Red", "Blue"],
        space="w",
        generator="unknown",
    )
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
    F = ModuleClassifier(net, ["Red", "Blue"], input_resolution=32).eval()
    RG, RF = Recording(G, "synthesize", hold=True), Recording(F, "probabilities")
    app = create_app(RG, RF, axes, max_batch=8)
    studio = app.state.studio
    requests = [
        (
            "/api/render" if k % 2 else "/api/probabilities",
            {"seed": k, "amounts": {"Red": 0.5 * k - 3}, "locks": ["Blue"] if k % 3 else []},
        )
        for k in range(16)
    ]
    with ServerThread(app) as server:
        replies = post_held(server.port, RG, requests)
    assert all(status == 200 for status, _ in replies) and max(len(b) for b in RG.batches) > 1
    filler = G.sample_latents_at(range(7000, 7008), seed=1, space="w")
    with torch.inference_mode():
        filler_images = G.synthesize(filler, "w")
    for (path, body), (_, payload) in zip(requests, replies, strict=True):
        latent = studio.edit(
            studio.base_latent(seed=body["seed"]), *studio.check_moves(body["amounts"], body["locks"])
        )
        images = answers_alone(lambda x: G.synthesize(x, "w"), RG.batches, latent, filler)
        reply = json.loads(payload) if path == "/api/probabilities" else None
        if reply is None:
            assert torch.equal(torch.tensor(json.loads(payload)["latent"], dtype=torch.float32), latent)
            assert base64.b64decode(json.loads(payload)["image"].split(",", 1)[1]) in [
                encode_png(i) for i in images
            ]
        else:
            probs = [
                studio.probabilities_dict(p)
                for image in images
                for p in answers_alone(F.probabilities, RF.batches, image, filler_images, atol=1e-4)
            ]
            assert reply["probabilities"] in probs
