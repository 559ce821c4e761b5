"""The studio's model server: the torch models behind every request, shared safely.

The generator and classifier are shared by all requests. :class:`Studio` serialises every
model call behind one lock, because module forward passes are not documented as thread-safe
and a CPU has no spare parallelism to gain from running two at once anyway (torch already
uses every core inside one call). Concurrent renders and scores share forward passes instead:
a dynamic batcher (:mod:`tlgan.studio.batcher`, ``max_batch`` / ``batch_wait_ms``) gathers the
latents of requests that arrive together into one generator call and their images into one
classifier call, and hands each request its own rows back. A lone request runs at once, on
the event loop itself when the model is quick (:meth:`Studio.call`); batches of several run
in a model thread while the loop reads the next requests; slow models go to FastAPI's thread
pool.

Recent images are remembered (:class:`ImageMemo`), and generators tuned to uploaded photos
are kept in a :class:`~tlgan.studio.tuned.TunedStore`. What a request means (its latent) is
decided by :class:`~tlgan.studio.faces.Faces`, free of all of this.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from starlette.concurrency import run_in_threadpool

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.imaging import read_image
from tlgan.models.base import Classifier, Generator
from tlgan.studio.batcher import DEFAULT_MAX_BATCH, DEFAULT_WAIT_MS, Batcher
from tlgan.studio.faces import Faces
from tlgan.studio.learned import check_learned_edits
from tlgan.studio.schema import AMOUNT_LIMIT
from tlgan.studio.tuned import DEFAULT_MAX_TUNED, TunedFace, TunedStore
from tlgan.studio.view import View, view_applied

log = logging.getLogger(__name__)

INLINE_SECONDS = 0.05
"""Model work quicker than this runs on the server's event loop (see :meth:`Studio.call`)."""
SEED_MEMO_BYTES = 8 * 1024 * 1024
"""Memory for remembered latents of seeds."""
IMAGE_MEMO_BYTES = 64 * 1024 * 1024
"""Memory for remembered generator images (about 1,300 faces at 64 px, 5 at 1024 px)."""
VIEW_BATCHERS = 32
"""Batchers kept for turned/moved views (a slider drag makes a new view per frame)."""


class ImageMemo:
    """Least-recently-used images by key, holding at most ``max_bytes`` of tensor data. Not thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self.used = 0
        self._items: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def get(self, key: bytes) -> torch.Tensor | None:
        image = self._items.get(key)
        if image is not None:
            self._items.move_to_end(key)
        return image

    def put(self, key: bytes, image: torch.Tensor) -> None:
        size = image.numel() * image.element_size()
        if size > self.max_bytes or key in self._items:
            return
        self._items[key] = image
        self.used += size
        while self.used > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.used -= old.numel() * old.element_size()

    def __len__(self) -> int:
        return len(self._items)


class Studio:
    """The generator, classifier and axes behind the studio, with thread-safe operations.

    Faces live in ``space`` (default: the axes' space): z, w, or wp, whose latents are
    (num_ws, w_dim) and which w axes move by the same step in every layer (as
    :func:`tlgan.editing.edit.edit_latents` does). :attr:`faces` (a
    :class:`~tlgan.studio.faces.Faces`) turns requests into latents; :meth:`base_latent`,
    :meth:`check_moves` and :meth:`edit` are its methods, here for callers of the studio.

    Every model call goes through :meth:`synthesize` / :meth:`score` / :meth:`locked`, which
    hold one lock. Validation methods raise :class:`TlganError` with a message for the user.

    Requests reach the models through :meth:`images` and :meth:`probabilities`. With
    ``max_batch`` > 1 those go through a :class:`~tlgan.studio.batcher.Batcher` each (one for
    the generator, one for the classifier), so concurrent requests share forward passes;
    ``batch_wait_ms`` bounds how long a batch gathers. ``max_batch=1`` turns batching off:
    every request then runs its own model call through :meth:`call`.
    """

    def __init__(
        self,
        generator: Generator,
        classifier: Classifier,
        axes: FeatureAxes,
        *,
        generator_name: str | None = None,
        classifier_name: str | None = None,
        amount_limit: float = AMOUNT_LIMIT,
        image_memo_bytes: int = IMAGE_MEMO_BYTES,
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_wait_ms: float = DEFAULT_WAIT_MS,
        space: str | None = None,
        invert_steps: int | None = None,
        max_tuned: int = DEFAULT_MAX_TUNED,
        tune_steps: int | None = None,
        learned: dict[str, Any] | None = None,
    ):
        from tlgan.pipeline import check_axes_for

        check_axes_for(axes, generator, generator_name)
        space = axes.space if space is None else str(space)
        generator.check_space(space)
        self.generator = generator.eval()
        self.classifier = classifier.eval()
        self.generator_name = generator_name or generator.name
        self.classifier_name = classifier_name or classifier.name
        latent_shape = tuple(int(s) for s in generator.latent_shape(space))
        # A page sends the same seed with every edit of a face, and drawing one latent costs a
        # whole block of the counter-based generator (about 2 ms); remember recent ones, in
        # SEED_MEMO_BYTES (4,096 z latents of 512; fewer of a large wp latent, 36 kB each).
        seeds_kept = max(256, SEED_MEMO_BYTES // (4 * math.prod(latent_shape)))
        self.faces = Faces(
            axes,
            latent_shape,
            functools.lru_cache(maxsize=seeds_kept)(self._draw_seed_latent),
            space=space,
            learned={name: model.eval() for name, model in (learned or {}).items()},
            amount_limit=amount_limit,
            generator_name=self.generator_name,
        )
        check_learned_edits(
            self.faces.learned, generator, space, latent_shape, axes.attributes, generator_name
        )
        self.invert_steps = invert_steps  # None: the inversion's default
        self.tune_steps = tune_steps  # None: tune_generator's default
        self.tuned = TunedStore(max_tuned)
        self.device = next(iter(generator.parameters()), torch.empty(0)).device
        self.classifier_device = next(iter(classifier.parameters()), torch.empty(0)).device
        self._lock = threading.RLock()
        self._recent_seconds = 0.0  # how long recent inline calls took (exponential average)
        self._images = ImageMemo(image_memo_bytes)
        self._memo_lock = threading.Lock()
        self.image_shape = (3, int(generator.img_resolution), int(generator.img_resolution))
        self.max_batch = int(max_batch)
        self.batch_wait_ms = float(batch_wait_ms)
        self.overlap_batches = True  # batches of several compute in the model thread (see run_batch)
        self._model_thread: ThreadPoolExecutor | None = None
        self._model_thread_lock = threading.Lock()
        self.draw_batcher = Batcher(
            lambda rows: list(self.synthesize(torch.stack(rows))),
            max_batch=max_batch,
            wait_ms=batch_wait_ms,
            check=self.faces.check_row,
            run=self.run_batch,
            name="generator",
        )
        self.score_batcher = Batcher(
            lambda images: list(self.score(torch.stack(images))),
            max_batch=max_batch,
            wait_ms=batch_wait_ms,
            check=self._check_image,
            run=self.run_batch,
            name="classifier",
        )
        self._view_batchers: OrderedDict[bytes, Batcher] = OrderedDict()  # see view_images

    def _draw_seed_latent(self, seed: int) -> torch.Tensor:
        return self.generator.sample_latents_at([seed], seed=0, space=self.space)[0]

    # -- what a request means (see Faces) ----------------------------------------------------

    axes = property(lambda self: self.faces.axes, doc="The attribute axes (:class:`FeatureAxes`).")
    space = property(lambda self: self.faces.space, doc="The faces' latent space (z, w or wp).")
    latent_shape = property(lambda self: self.faces.latent_shape, doc="Shape of one face's latent.")
    latent_dim = property(lambda self: self.faces.latent_dim, doc="Numbers in one face's latent.")
    learned = property(lambda self: self.faces.learned, doc="Learned edits by row name, in order.")
    amount_limit = property(lambda self: self.faces.amount_limit, doc="Largest |amount| accepted.")

    @property
    def row_names(self) -> list[str]:
        """Every name ``amounts`` takes: the axes' attributes, then the learned edits."""
        return self.faces.row_names

    def shape_text(self) -> str:
        """See :meth:`Faces.shape_text`."""
        return self.faces.shape_text()

    def base_latent(self, seed: int | None = None, latent: Sequence[Any] | None = None) -> torch.Tensor:
        """See :meth:`Faces.base_latent`."""
        return self.faces.base_latent(seed, latent)

    def check_moves(
        self, amounts: Mapping[str, float], locks: Sequence[str]
    ) -> tuple[dict[str, float], list[str]]:
        """See :meth:`Faces.check_moves`."""
        return self.faces.check_moves(amounts, locks)

    def edit(self, base: torch.Tensor, amounts: Mapping[str, float], locks: Sequence[str]) -> torch.Tensor:
        """See :meth:`Faces.edit`."""
        return self.faces.edit(base, amounts, locks)

    # -- model calls -----------------------------------------------------------------------

    def synthesize(
        self, latents: torch.Tensor, tuned: TunedFace | None = None, view: View | None = None
    ) -> torch.Tensor:
        """Images (N, 3, R, R) in [-1, 1], on the CPU, for latents (N, *latent_shape) of the studio's space,
        drawn by the shared generator, or by ``tuned``'s generator; turned and moved by ``view``
        (StyleGAN3's input transform, for this call only; see :mod:`tlgan.studio.view`).

        Recent images are remembered, keyed by the latent's exact bytes (after ``tuned.key``
        for a tuned generator's): the page asks for a face's image (/api/render) and its scores
        (/api/probabilities) at the same moment, and whichever request comes second takes the
        image from here instead of running the generator again. Undo hits it too.
        """
        generator = self.generator if tuned is None else tuned.generator
        prefix = (b"" if tuned is None else tuned.key) + (b"" if view is None else b"view:" + view.key)
        latents = latents.detach().to("cpu", torch.float32).contiguous()
        keys = [prefix + row.numpy().tobytes() for row in latents]
        with self._memo_lock:
            out: list[torch.Tensor | None] = [self._images.get(key) for key in keys]
        # Each distinct missing latent is drawn once (a batch may hold a render and its
        # scores request for the same face).
        first: dict[bytes, Any] = {}
        for i, image in enumerate(out):
            if image is None:
                first.setdefault(keys[i], i)
        if first:
            rows = list(first.values())
            with self._lock, view_applied(generator, view), torch.inference_mode():
                made = generator.synthesize(latents[rows].to(self.device), self.space)
            made = made.float().cpu().clone()  # a plain tensor: inference tensors cannot enter autograd later
            with self._memo_lock:
                for i, image in zip(rows, made, strict=True):
                    self._images.put(keys[i], image)
                    first[keys[i]] = image
            for i, image in enumerate(out):
                if image is None:
                    out[i] = first[keys[i]]
        return torch.stack(out)  # type: ignore[arg-type]

    def score(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities (N, A) for images (N, 3, H, W) in [-1, 1]."""
        with self._lock, torch.inference_mode():
            return self.classifier.probabilities(images.to(self.classifier_device)).float().cpu()

    def locked(self):
        """The model lock, for callers (inversion) that use the models in their own way."""
        return self._lock

    def probabilities_dict(self, probs: torch.Tensor) -> dict[str, float]:
        """{attribute: probability rounded to 6 digits} for one row (A,) of :meth:`score`."""
        return {
            name: round(float(p), 6)
            for name, p in zip(self.classifier.attributes, probs.tolist(), strict=True)
        }

    # -- uploads: inversion and tuning -------------------------------------------------------

    def invert(self, data: bytes) -> tuple[torch.Tensor, dict[str, Any]]:
        """(latent, info) of an uploaded photo's bytes: :func:`tlgan.inversion.invert_image` under
        the model lock, searched in the studio's own space (W / W+ for a w / wp studio), so the
        latent is one a render takes. ImportError when this build has no inversion."""
        from tlgan.inversion import invert_image

        with self.locked():
            latent, _reconstruction, info = invert_image(
                self.generator, self.classifier, data, space=self.space, **self.inversion_options()
            )
        return latent, info

    @property
    def tuning_capacity(self) -> int:
        """How many tuned generators uploads may make and the store keep (0: no tuning)."""
        try:
            self.check_tuning()
        except TlganError:
            return 0
        return self.tuned.max_items

    def check_tuning(self) -> None:
        """TlganError unless uploads can be tuned: the store is on and the generator has weights."""
        self.tuned.check_enabled()
        if not any(True for _ in self.generator.parameters()):
            raise TlganError(
                f"generator {self.generator_name!r} has no weights to tune (it is computed, not "
                f"learned); upload without tuning"
            )

    def tune(self, image_bytes: bytes, pivot: torch.Tensor, name: str = "uploaded image") -> TunedFace:
        """Tune a copy of the generator so that ``pivot`` (``latent_shape``) draws the photo; keep it in :attr:`tuned`.

        Pivotal tuning with its locality regulariser (:func:`tlgan.inversion.tune.tune_generator`,
        without a classifier, as ``tlgan invert --tune`` does), on the photo cropped and sized
        as the inversion saw it. Holds the model lock throughout: the original generator is
        the locality reference.
        """
        from tlgan.inversion.tune import tune_generator

        self.check_tuning()
        target, _notes = read_image(image_bytes, int(self.generator.img_resolution), name=name)
        options = {} if self.tune_steps is None else {"steps": int(self.tune_steps)}
        with self._lock:
            result = tune_generator(self.generator, target, pivot, space=self.space, **options)
        info = {
            "psnr_db": round(result.psnr_db, 3),
            "start_psnr_db": round(result.start_psnr_db, 3),
            "steps": result.info.get("steps"),
            "seconds": round(result.seconds, 3),
        }
        return self.tuned.add(result.generator.eval(), info)

    def inversion_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`tlgan.inversion.invert_image`: ``steps`` when the studio
        sets ``invert_steps``, and ``encoder=None`` when the
        generator's shipped encoder cannot start a search in the studio's space (a wp encoder
        for a w studio), so the search starts from the average latent instead; else nothing
        (the inversion picks the encoder itself)."""
        from tlgan.inversion.encoder import check_encoder_for
        from tlgan.models.zoo import bundled_encoder

        choice: dict[str, Any] = {} if self.invert_steps is None else {"steps": int(self.invert_steps)}
        encoder = bundled_encoder(self.generator)
        if encoder is None:
            return choice
        try:
            check_encoder_for(encoder, self.generator, self.space)
        except TlganError as exc:
            log.info("not using the encoder of %r for %s uploads: %s", self.generator_name, self.space, exc)
            choice["encoder"] = None
        return choice

    # -- what requests use -------------------------------------------------------------------

    async def images(
        self, latents: torch.Tensor, tuned: TunedFace | None = None, view: View | None = None
    ) -> torch.Tensor:
        """Images (N, 3, R, R) in [-1, 1], on the CPU, for latents (N, *latent_shape): batched with other requests'.

        Remembered images (see :meth:`synthesize`) come back without waiting for a batch. A
        ``tuned`` photo's generator serves only its own requests, so they never join the
        shared generator's batches: they run alone, like unbatched requests.
        """
        if tuned is not None or view is not None:
            return await self.view_images(latents, tuned, view)
        if self.max_batch <= 1:
            return await self.call(self.synthesize, latents)
        latents = latents.detach().to("cpu", torch.float32).contiguous()
        with self._memo_lock:  # not the model lock: an inversion may hold that for seconds
            remembered = [self._images.get(row.numpy().tobytes()) for row in latents]
        missing = [i for i, image in enumerate(remembered) if image is None]
        if missing:
            made = await asyncio.gather(*(self.draw_batcher.submit(latents[i]) for i in missing))
            for i, image in zip(missing, made, strict=True):
                remembered[i] = image
        return torch.stack(remembered)  # type: ignore[arg-type]

    async def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Probabilities (N, A) for images (N, 3, R, R) from :meth:`images`: batched with other requests' images."""
        if self.max_batch <= 1:
            return await self.call(self.score, images)
        return torch.stack(await asyncio.gather(*(self.score_batcher.submit(image) for image in images)))

    def _check_image(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or tuple(image.shape) != self.image_shape:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise TlganError(f"an image to score must have shape {self.image_shape}, not {shape}")
        return image

    async def aclose(self) -> None:
        """Stop batching (the server is shutting down); requests still queued get a 503."""
        await self.draw_batcher.aclose()
        await self.score_batcher.aclose()
        await self.close_view_batchers()
        with self._model_thread_lock:
            pool, self._model_thread = self._model_thread, None
        if pool is not None:
            pool.shutdown(wait=True)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, a request's model work: inline when the models are free and quick, else in a worker thread.

        A render of the bundled model takes a few milliseconds, and handing it to a worker
        thread and back costs a tenth of that again; every model call holds one lock anyway,
        so inline work loses no parallelism. It stays in the thread pool when the models are
        busy (another render, an inversion that takes seconds: waiting for them inline would
        stall every connection) or when recent calls took longer than INLINE_SECONDS (a large
        generator on a CPU would hold up the page's other requests).
        """
        if self._recent_seconds < INLINE_SECONDS and self._lock.acquire(blocking=False):
            try:
                return self._timed(fn, *args)
            finally:
                self._lock.release()
        return await run_in_threadpool(self._timed, fn, *args)

    async def run_batch(self, fn: Callable[[list[Any]], Any], items: list[Any]) -> Any:
        """``fn(items)`` for a batcher: one item like any request (:meth:`call`), several in the model thread.

        A lone item is what a single user sends, and :meth:`call` serves it inline when the
        models are quick, so batching costs one user nothing. A batch of several means a
        crowd: it computes in a thread of its own (torch releases the GIL inside its
        kernels), while the event loop reads the requests that will form the next batch and
        encodes the previous batch's PNGs, so the two CPU-bound halves of serving overlap.
        """
        if len(items) == 1 or not self.overlap_batches:
            return await self.call(fn, items)
        with self._model_thread_lock:
            if self._model_thread is None:
                self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="tlgan-model")
            pool = self._model_thread
        return await asyncio.get_running_loop().run_in_executor(pool, self._timed, fn, items)

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)``, keeping an exponential average of how long such calls take (inline or not)."""
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._recent_seconds = 0.8 * self._recent_seconds + 0.2 * (time.perf_counter() - start)

    # -- views: StyleGAN3's input transform per request (see tlgan.studio.view) ---------------

    async def view_images(
        self, latents: torch.Tensor, tuned: TunedFace | None, view: View | None
    ) -> torch.Tensor:
        """:meth:`images` for a tuned photo's generator or a turned/moved view.

        A tuned generator serves only its own requests, so they run alone. Requests of one
        view share batches with each other (one batcher per view, the most recent
        ``VIEW_BATCHERS`` kept) and never with another view's, because the transform is the
        generator's state for the whole forward pass.
        """
        for row in latents:
            self.faces.check_row(row)
        if tuned is not None or self.max_batch <= 1:
            return await self.call(self.synthesize, latents, tuned, view)
        batcher = self._view_batchers.get(view.key)
        if batcher is None:
            batcher = Batcher(
                lambda rows, view=view: list(self.synthesize(torch.stack(rows), None, view)),
                max_batch=self.max_batch,
                wait_ms=self.batch_wait_ms,
                check=self.faces.check_row,
                run=self.run_batch,
                name=f"generator (view {view.to_dict()})",
            )
            self._view_batchers[view.key] = batcher
            self._forget_idle_view_batchers()
        self._view_batchers.move_to_end(view.key)
        latents = latents.detach().to("cpu", torch.float32).contiguous()
        return torch.stack(await asyncio.gather(*(batcher.submit(row) for row in latents)))

    def _forget_idle_view_batchers(self) -> None:
        """Drop the least recently used views' batchers beyond VIEW_BATCHERS, those with nothing queued."""
        for key in list(self._view_batchers)[: max(0, len(self._view_batchers) - VIEW_BATCHERS)]:
            if self._view_batchers[key].pending() == 0:
                del self._view_batchers[key]

    async def close_view_batchers(self) -> None:
        for batcher in list(self._view_batchers.values()):
            await batcher.aclose()
