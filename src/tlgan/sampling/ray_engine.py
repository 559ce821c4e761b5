"""Sampling on a Ray cluster: shards are the unit of work, one actor per worker.

Each worker is a Ray actor (:class:`ShardWorker`) that loads the generator and classifier
once, from the same spec strings as a local run, and computes shards with the same
:func:`tlgan.sampling.shard.sample_shard` as the local engine; the driver writes the
manifest, hands out shards and shows one progress bar. Latent i depends only on (seed, i),
so the run folder has the same shards, byte for byte, as a local run, and ``--resume``
finishes a run whichever engine started it.

Workers write their shards straight into the run folder, so ``out`` must be a folder every
node sees at the same path (NFS, or a bucket mounted with gcsfuse / s3fs / blobfuse).
Spec strings that name local files (``gen.py:factory``, a model folder) are made absolute
for the workers and must also live on a shared path.

A worker that dies (its process crashes, its node is lost) is restarted by Ray
(``max_restarts``) and its shards are retried (``max_task_retries``); shards are written
to a temporary name and renamed, so a shard is either absent, or whole and identical to
the one any other worker would write.

Ray is an optional dependency (``pip install 'tlgan[ray]'``), imported only here.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.models.base import Classifier, Generator
from tlgan.sampling.run import MANIFEST, Run
from tlgan.sampling.shard import Engine, ShardSettings, sample_shard

log = logging.getLogger(__name__)

INSTALL_HINT = "install it with: pip install 'tlgan[ray]'"
# Shards queued on each actor: the second one hides the round trip between two shards.
IN_FLIGHT_PER_WORKER = 2
CPUS_PER_WORKER = 1


def import_ray():
    """The ``ray`` module, or a TlganError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise TlganError(
            f"--engine ray needs the Ray package, which is not installed; {INSTALL_HINT}"
        ) from None
    return ray


def connect(address: str | None = None, **local_options: Any) -> bool:
    """Connect to Ray unless this process already is; returns True when this call connected.

    ``address``: None starts a local instance (``local_options`` such as ``num_cpus`` go to
    it); "auto" joins the cluster this machine belongs to (``ray start --head`` / ``ray start
    --address``); "ray://HOST:PORT" connects through Ray Client.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING}
    if address is None and not os.environ.get("RAY_ADDRESS"):  # ray.init would join RAY_ADDRESS's cluster
        kwargs.update({"include_dashboard": False, **local_options})
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise TlganError(
            f"cannot connect to a Ray cluster at {address!r} ({exc}); start one with `ray start --head` "
            f"or pass --address HOST:PORT / ray://HOST:10001"
        ) from None
    return True


@contextmanager
def session(address: str | None = None) -> Iterator[None]:
    """Connected to Ray inside the block (see :func:`connect`); disconnects after it only if it connected."""
    started = connect(address)
    try:
        yield
    finally:
        if started:
            import_ray().shutdown()


def check_ray_request(
    generator_spec: str | None,
    classifier_spec: str | None,
    device: str,
    workers: int | None,
    gpus_per_worker: float,
    max_retries: int,
) -> None:
    """Refuse a Ray run that cannot work, before anything is written."""
    import_ray()
    if not generator_spec or not classifier_spec:
        raise TlganError(
            "the Ray engine loads the models on each worker from their spec strings; "
            "pass generator_spec= and classifier_spec= (the CLI passes --generator / --classifier)"
        )
    if workers is not None and workers < 1:
        raise TlganError(f"--workers must be at least 1 (got {workers})")
    if gpus_per_worker < 0:
        raise TlganError(f"--gpus-per-worker must not be negative (got {gpus_per_worker})")
    if gpus_per_worker > 0 and not device.startswith("cuda"):
        raise TlganError(
            "--gpus-per-worker reserves GPUs for each worker, but --device is "
            f"{device!r}; pass --device cuda as well"
        )
    if device.startswith("cuda") and gpus_per_worker == 0:
        raise TlganError(
            "--device cuda on Ray workers needs --gpus-per-worker (e.g. 1), so that Ray gives "
            "each worker a GPU of its own"
        )
    if max_retries < 0:
        raise TlganError(f"max_retries must not be negative (got {max_retries})")


def portable_spec(spec: str, kind: str) -> str:
    """``spec`` as a worker must see it: a local file or folder made absolute (workers run
    elsewhere, in another working directory); registered names and URLs unchanged."""
    from tlgan.models import CLASSIFIERS, GENERATORS

    if spec in (GENERATORS if kind == "generator" else CLASSIFIERS) or "://" in spec:
        return spec
    for prefix in ("clip:", "hf-classifier:"):  # a model folder after the prefix, or a Hub id
        if spec.startswith(prefix):
            model = spec[len(prefix) :]
            return prefix + (str(Path(model).resolve()) if model and Path(model).is_dir() else model)
    if ".py:" in spec:
        path_text, _, func = spec.rpartition(":")
        return f"{Path(path_text).resolve()}:{func}" if Path(path_text).exists() else spec
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


class ShardWorker:
    """Loads the models once, then computes shards; becomes a Ray actor with ``ray.remote``.

    ``generator_options`` are keyword arguments of :func:`tlgan.models.load_generator`
    (recorded in the manifest, so every worker builds the same generator); ``classifier_prompts``
    a CLIP classifier's prompts as the manifest records them (the same classifier). Only plain values
    go to the constructor: Ray re-runs it when it restarts a dead worker.
    """

    def __init__(
        self,
        generator_spec: str,
        classifier_spec: str,
        generator_options: dict[str, Any],
        device: str,
        threads: int = CPUS_PER_WORKER,
        classifier_prompts: dict[str, Any] | None = None,
    ):
        # One intra-op thread per reserved CPU: more would fight the other workers on the node.
        torch.set_num_threads(threads)
        from tlgan.models import load_classifier, load_generator

        self.generator = load_generator(generator_spec, device=device, **generator_options)
        self.classifier = load_classifier(classifier_spec, device=device, attributes=classifier_prompts)

    def ready(self, out: str) -> str:
        """The worker's host name, once it can see the run folder ``out``."""
        host = socket.gethostname()
        if not (Path(out) / MANIFEST).is_file():
            raise TlganError(
                f"a worker on {host} cannot see {Path(out) / MANIFEST}; put --out on a folder every "
                f"node mounts at the same path (NFS, a mounted bucket)"
            )
        return host

    def sample(self, out: str, k: int, settings: ShardSettings, progress: Any = None) -> int:
        """Compute and save shard ``k``; returns its sample count. ``progress``, a
        :class:`ProgressBoard` actor handle, is told after each batch how far the shard is."""
        done = 0

        def on_batch(count: int) -> None:
            nonlocal done
            done += count
            if progress is not None:
                progress.report.remote(k, done)  # fire and forget

        return sample_shard(self.generator, self.classifier, out, k, settings, on_batch=on_batch)


class ProgressBoard:
    """How many samples of each shard in progress are done, as reported by the workers."""

    def __init__(self):
        self.counts: dict[int, int] = {}

    def report(self, k: int, count: int) -> None:
        self.counts[k] = count  # a retried shard starts again from 0

    def snapshot(self) -> dict[int, int]:
        return dict(self.counts)


def _cause(exc: Exception) -> Exception:
    """A TlganError raised inside a worker, unwrapped from Ray's error, else ``exc``."""
    cause = getattr(exc, "cause", None)
    return TlganError(str(cause)) if isinstance(cause, TlganError) else exc


def _default_workers(ray, gpus_per_worker: float) -> int:
    resources = ray.cluster_resources()
    if gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // CPUS_PER_WORKER))


def _start_workers(
    ray, run: Run, settings: ShardSettings, n_workers: int, gpus_per_worker: float, max_retries: int
) -> list[Any]:
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    if n_workers * CPUS_PER_WORKER > cpus or n_workers * gpus_per_worker > gpus:
        log.warning(
            "%d workers need %d CPUs and %g GPUs, the cluster has %g and %g now: some will wait for the "
            "autoscaler or never start",
            n_workers,
            n_workers * CPUS_PER_WORKER,
            n_workers * gpus_per_worker,
            cpus,
            gpus,
        )
    worker_class = ray.remote(ShardWorker).options(
        num_cpus=CPUS_PER_WORKER,
        num_gpus=gpus_per_worker,
        max_restarts=max_retries,
        max_task_retries=max_retries,
    )
    manifest = run.manifest
    generator_spec = portable_spec(manifest["generator"], "generator")
    classifier_spec = portable_spec(manifest["classifier"], "classifier")
    options = manifest.get("generator_options") or {}
    return [
        worker_class.remote(
            generator_spec,
            classifier_spec,
            options,
            settings.device,
            CPUS_PER_WORKER,
            manifest.get("prompts"),
        )
        for _ in range(n_workers)
    ]


def _wait_ready(ray, actors: list[Any], out: str) -> None:
    refs = [actor.ready.remote(out) for actor in actors]
    start = time.perf_counter()
    while True:
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=30)
        if not pending:
            break
        log.warning(
            "%d of %d Ray workers ready after %.0f s; waiting for the others (cluster resources, loading the models)",
            len(refs) - len(pending),
            len(refs),
            time.perf_counter() - start,
        )
    try:
        hosts = ray.get(refs)
    except ray.exceptions.RayError as exc:
        cause = _cause(exc)
        if isinstance(cause, TlganError):
            raise cause from None
        raise TlganError(f"a Ray worker could not load the models: {exc}") from None
    log.info("%d Ray workers ready on %s", len(hosts), ", ".join(sorted(set(hosts))))


def sample_shards_on_ray(
    run: Run,
    todo: list[int],
    settings: ShardSettings,
    bar: Any,
    *,
    workers: int | None = None,
    gpus_per_worker: float = 0.0,
    max_retries: int = 3,
) -> float:
    """Compute the shards ``todo`` of ``run`` on Ray workers, updating the tqdm ``bar``
    (called inside :func:`session`).

    Returns the seconds spent sampling, from the moment every worker had loaded its models
    (start-up excluded) to the last shard written.
    """
    if not todo:
        return 0.0
    ray = import_ray()
    pool: list[Any] = []
    board = None
    try:
        n_workers = min(workers or _default_workers(ray, gpus_per_worker), len(todo))
        board = ray.remote(ProgressBoard).options(num_cpus=0).remote()
        pool = _start_workers(ray, run, settings, n_workers, gpus_per_worker, max_retries)
        out = str(run.path.resolve())
        _wait_ready(ray, pool, out)

        start = time.perf_counter()
        queue = list(todo)
        in_flight: dict[Any, tuple] = {}  # object ref -> (actor, shard)

        def submit(actor) -> None:
            k = queue.pop(0)
            in_flight[actor.sample.remote(out, k, settings, board)] = (actor, k)

        for _ in range(IN_FLIGHT_PER_WORKER):
            for actor in pool:
                if queue:
                    submit(actor)
        finished, shown = 0, 0
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            for ref in ready:
                actor, k = in_flight.pop(ref)
                try:
                    finished += ray.get(ref)
                except ray.exceptions.RayError as exc:
                    cause = _cause(exc)
                    if isinstance(cause, TlganError):
                        raise cause from None
                    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise TlganError(
                        f"shard {k} failed on Ray after {max_retries} retries ({type(exc).__name__}: "
                        f"{first_line}); the shards already written are kept: finish the run with "
                        f"--resume"
                    ) from None
                if queue:
                    submit(actor)
            partial = ray.get(board.snapshot.remote())
            now = finished + sum(partial.get(k, 0) for _, k in in_flight.values())
            if now != shown:
                bar.update(now - shown)
                shown = now
        return time.perf_counter() - start
    finally:
        for actor in pool + ([board] if board is not None else []):
            ray.kill(actor)


@dataclass(frozen=True, kw_only=True)
class RayEngine(Engine):
    """Sample on a Ray cluster: ``workers`` actors (default: as many as the cluster's CPUs, or
    GPUs / ``gpus_per_worker``) each load the models from the run's spec strings and compute
    whole shards (see the module docs).

    ``address`` goes to ``ray.init`` ("auto", "ray://HOST:PORT"; None starts a local instance
    unless one is running); a worker that dies is restarted and its shard retried up to
    ``max_retries`` times. ``batch_size`` and ``device`` as for :class:`tlgan.sampling.LocalEngine`
    (``device="cuda"`` needs ``gpus_per_worker`` > 0). The run folder must be one every worker
    reaches; the models given to :func:`tlgan.sample` are used on the driver only for the manifest.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    max_retries: int = 3

    name = "ray"

    def check(self, generator_spec: str | None, classifier_spec: str | None) -> None:
        super().check(generator_spec, classifier_spec)
        check_ray_request(
            generator_spec, classifier_spec, self.device, self.workers, self.gpus_per_worker, self.max_retries
        )

    def session(self):
        # Connected before the run folder is touched: a cluster that is not there writes nothing.
        return session(self.address)

    def sample_shards(
        self,
        generator: Generator,
        classifier: Classifier,
        run: Run,
        todo: list[int],
        settings: ShardSettings,
        bar: Any,
    ) -> float:
        return sample_shards_on_ray(
            run,
            todo,
            settings,
            bar,
            workers=self.workers,
            gpus_per_worker=self.gpus_per_worker,
            max_retries=self.max_retries,
        )
