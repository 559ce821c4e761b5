"""The web studio: a JSON API over the editing functions, and the page that uses it.

Every request is self-contained: it names the face (a ``seed`` or a ``latent``), the
attribute ``amounts`` and the ``locks``; the browser keeps that state and its undo history.
So several tabs and users never see each other's edits, and any response can be
reproduced from its request alone.

The torch models are shared by all requests. :class:`Studio` serialises every model call
behind one lock, because module forward passes are not documented as thread-safe and a CPU
has no spare parallelism to gain from running two at once anyway (torch already uses every
core inside one call). Concurrent renders and scores share forward passes instead: a
dynamic batcher (:mod:`tlgan.studio.batcher`, ``max_batch`` / ``batch_wait_ms``) gathers the
latents of requests that arrive together into one generator call and their images into one
classifier call, and hands each request its own rows back; PNG encoding happens afterwards,
outside the lock. A lone request runs at once, on the event loop itself when the model is
quick (:meth:`Studio.call`); batches of several run in a model thread while the loop reads
the next requests; uploads and slow models go to FastAPI's thread pool.

Endpoints (the OpenAPI schema at ``/openapi.json`` and the pages ``/docs`` describe them):

- ``GET  /``                 the studio page (plain HTML/CSS/JS shipped in ``static/``);
- ``GET  /api/attributes``   row names (attribute axes, then learned edits, each with its kind), the
  allowed amount range, model names;
- ``POST /api/render``       face + amounts + locks -> image and edited latent;
- ``POST /api/probabilities`` face + amounts + locks -> the classifier's probabilities;
- ``POST /api/score``        an uploaded image -> the classifier's probabilities;
- ``POST /api/invert``       an uploaded photo -> its latent and reconstruction (with ``tune``: also
  a generator tuned to the photo, named by ``tuned_id``; see :mod:`tlgan.studio.tuned`).

Faces live in the studio's space: z, w, or wp (W+, latents (num_ws, w_dim), moved along w
axes by the same step in every layer). Learned edits (:mod:`tlgan.studio.learned`) are rows
too, moved through the same ``amounts`` and applied after the axes. A request carrying a
``tuned_id`` is drawn by that photo's tuned generator, outside the shared generator's
batches; every other request is untouched by tuning.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

import tlgan
from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.imaging import read_image, to_uint8
from tlgan.models.base import Classifier, Generator
from tlgan.registry import unknown_name_message
from tlgan.studio.batcher import DEFAULT_MAX_BATCH, DEFAULT_WAIT_MS, Batcher, BatcherClosed, BatchFailed
from tlgan.studio.learned import apply_learned, check_learned_edits, load_learned_edits
from tlgan.studio.schema import (
    AMOUNT_LIMIT,
    ERRORS,
    FACE_ERRORS,
    MAX_SEED,
    AttributeInfo,
    AttributesResponse,
    ErrorResponse,
    FaceRequest,
    InvertResponse,
    ProbabilitiesResponse,
    RenderRequest,
    RenderResponse,
    ScoreResponse,
)
from tlgan.studio.serving import (  # noqa: F401
    MAX_BODY_BYTES,
    BodyLimitMiddleware,
    ServerThread,
    bind_socket,
    describe_validation_errors,
    url_of,
)
from tlgan.studio.tuned import DEFAULT_MAX_TUNED, TunedFace, TunedFaceGone, TunedStore

log = logging.getLogger(__name__)

# Serving helpers live in tlgan.studio.serving; they are importable from here too.
__all__ = [
    "Studio",
    "create_app",
    "app_from_specs",
    "encode_png",
    "data_url",
    "json_response",
    "ServerThread",
    "bind_socket",
    "url_of",
    "AMOUNT_LIMIT",
    "MAX_BODY_BYTES",
]

STATIC_DIR = Path(__file__).parent / "static"

LATENT_LIMIT = 100.0
"""Largest |value| accepted in a latent. Latents are standard normal; beyond this they are garbage."""
INLINE_SECONDS = 0.05
"""Model work quicker than this runs on the server's event loop (see :meth:`Studio.call`)."""
SEED_MEMO_BYTES = 8 * 1024 * 1024
"""Memory for remembered latents of seeds."""
IMAGE_MEMO_BYTES = 64 * 1024 * 1024
"""Memory for remembered generator images (about 1,300 faces at 64 px, 5 at 1024 px)."""
INLINE_PNG_PIXELS = 128 * 128
"""PNGs of at most this many pixels are encoded on the event loop; larger ones in a worker thread."""

# The page is served with this policy: everything comes from the package itself, nothing
# from a CDN; images arrive as data: URLs (renders) or blob: URLs (downloads, uploads).
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


# ----------------------------------------------------------------------------------------------
# The models and the operations, free of HTTP.


def encode_png(image: torch.Tensor, upscale: int = 1, compress_level: int = 1) -> bytes:
    """PNG bytes of one image (3, H, W) in [-1, 1], enlarged ``upscale`` times by pixel repetition.

    Level 1 compression: a 64 px face is a few kB at any level, and level 1 is the fastest.
    """
    array = to_uint8(image)
    if upscale > 1:
        array = np.repeat(np.repeat(array, upscale, axis=0), upscale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), "RGB").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def json_response(body: dict[str, Any], latent: torch.Tensor | None = None) -> Response:
    """``body`` as a JSON response, with ``latent`` (D,) added as a list of numbers under "latent".

    Endpoints return ready responses: their bodies are built from checked values, and
    re-validating them through the response models would only add latency. The latent is
    written with 9 significant digits, the fewest that give back every float32 exactly,
    which takes a third of the time of the default float repr (17 digits for a float32
    widened to double).
    """
    text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    if latent is not None:
        numbers = ",".join([f"{v:.9g}" for v in latent.detach().float().cpu().reshape(-1).tolist()])
        text = text[:-1] + ("," if len(text) > 2 else "") + '"latent":[' + numbers + "]}"
    return Response(text, media_type="application/json", headers={"Cache-Control": "no-store"})


def _jsonable(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of an info dict: tensors become numbers or short lists, the rest strings."""
    if depth > 4:
        return str(value)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return float(value) if value.numel() == 1 else [float(v) for v in value.flatten()[:64]]
    if isinstance(value, np.generic):
        return _jsonable(value.item(), depth)
    if isinstance(value, np.ndarray):
        return _jsonable(torch.from_numpy(np.asarray(value, dtype=np.float64)), depth)
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v, depth + 1) for k, v in list(value.items())[:64]}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, depth + 1) for v in list(value)[:64]]
    return str(value)


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
    :func:`tlgan.editing.edit.edit_latents` does).

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
        if space != axes.space and not (space == "wp" and axes.space == "w"):
            raise TlganError(
                f"axes fitted in {axes.space!r} cannot edit faces in {space!r}; fit axes in "
                f"{'w' if space == 'wp' else space!r} or serve the studio in {axes.space!r}"
            )
        self.generator = generator.eval()
        self.classifier = classifier.eval()
        self.axes = axes
        self.generator_name = generator_name or generator.name
        self.classifier_name = classifier_name or classifier.name
        self.amount_limit = float(amount_limit)
        self.space = space
        self.invert_steps = invert_steps  # None: the inversion's default
        self.tune_steps = tune_steps  # None: tune_generator's default
        self.tuned = TunedStore(max_tuned)
        self.latent_shape = tuple(int(s) for s in generator.latent_shape(space))
        self.latent_dim = int(np.prod(self.latent_shape))  # numbers in one latent
        self.learned = {
            name: model.eval() for name, model in (learned or {}).items()
        }  # in the order they apply
        check_learned_edits(
            self.learned, generator, space, self.latent_shape, axes.attributes, generator_name
        )
        self.device = next(iter(generator.parameters()), torch.empty(0)).device
        self.classifier_device = next(iter(classifier.parameters()), torch.empty(0)).device
        self._lock = threading.RLock()
        self._recent_seconds = 0.0  # how long recent inline calls took (exponential average)
        # A page sends the same seed with every edit of a face, and drawing one latent costs a
        # whole block of the counter-based generator (about 2 ms); remember recent ones, in
        # SEED_MEMO_BYTES (4,096 z latents of 512; fewer of a large wp latent, 36 kB each).
        seeds_kept = max(256, SEED_MEMO_BYTES // (4 * self.latent_dim))
        self._seed_latent = functools.lru_cache(maxsize=seeds_kept)(self._draw_seed_latent)
        self._direction = functools.lru_cache(maxsize=4096)(self._unit_move)
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
            check=self._check_row,
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

    def _draw_seed_latent(self, seed: int) -> torch.Tensor:
        return self.generator.sample_latents_at([seed], seed=0, space=self.space)[0]

    # -- validation ------------------------------------------------------------------------

    def shape_text(self) -> str:
        """The latent shape a request must send, in words (for error messages)."""
        if len(self.latent_shape) == 1:
            return f"{self.latent_dim} numbers"
        rows, width = self.latent_shape
        return (
            f"{rows} x {width} numbers (num_ws x w_dim: {rows} lists of {width}, or one flat list of "
            f"{self.latent_dim})"
        )

    def base_latent(self, seed: int | None = None, latent: Sequence[Any] | None = None) -> torch.Tensor:
        """The face's unedited latent (``latent_shape``), from exactly one of ``seed`` or ``latent``.

        ``latent`` may be flat (``latent_dim`` numbers) or nested in the latent's shape.
        """
        if (seed is None) == (latent is None):
            raise TlganError(
                "give exactly one of `seed` (a face number, e.g. 7) or `latent` (a list of "
                f"{self.shape_text()})" + ("; you gave both" if seed is not None else "")
            )
        if seed is not None:
            if not 0 <= int(seed) <= MAX_SEED:
                raise TlganError(f"seed {seed} is out of range; use 0..{MAX_SEED}")
            return self._seed_latent(int(seed)).clone()
        try:
            array = np.asarray(latent, dtype=np.float32)
        except (TypeError, ValueError):
            raise TlganError(
                f"latent is not a regular list of numbers (rows of different lengths?); generator "
                f"{self.generator_name!r} needs {self.shape_text()} (space {self.space!r})"
            ) from None
        if not (array.shape == self.latent_shape or (array.ndim == 1 and array.size == self.latent_dim)):
            got = f"{array.size} numbers" if array.ndim == 1 else f"shape {list(array.shape)}"
            need = (
                f"{self.latent_dim} (space {self.space!r})"
                if len(self.latent_shape) == 1
                else f"{self.shape_text()} (space {self.space!r}, shape {list(self.latent_shape)})"
            )
            raise TlganError(
                f"latent has {got} but generator {self.generator_name!r} needs {need}; send the "
                f"`latent` a previous response gave"
            )
        values = torch.from_numpy(np.ascontiguousarray(array).reshape(-1))
        bad = ~torch.isfinite(values)
        if bad.any():
            where = torch.nonzero(bad).flatten()[:5].tolist()
            raise TlganError(
                f"latent holds {int(bad.sum())} NaN or infinite value(s) (first at index {where}); "
                f"every entry must be a finite number"
            )
        big = values.abs() > LATENT_LIMIT
        if big.any():
            i = int(torch.nonzero(big).flatten()[0])
            raise TlganError(
                f"latent entry {i} is {float(values[i]):g}; latents are standard normal, so entries "
                f"beyond +-{LATENT_LIMIT:g} are not plausible faces"
            )
        return values.reshape(self.latent_shape)

    @property
    def row_names(self) -> list[str]:
        """Every name ``amounts`` takes: the axes' attributes, then the learned edits."""
        return list(self.axes.attributes) + list(self.learned)

    def check_moves(
        self, amounts: dict[str, float], locks: Sequence[str]
    ) -> tuple[dict[str, float], list[str]]:
        """Known row names (axes and learned edits) and finite amounts within the limit; returns cleaned copies."""
        clean: dict[str, float] = {}
        for name, amount in amounts.items():
            if name not in self.learned and name not in self.axes.attributes:
                raise TlganError(unknown_name_message("attribute", name, self.row_names))
            amount = float(amount)
            if not math.isfinite(amount):
                raise TlganError(f"amount for {name!r} is {amount}; amounts must be finite numbers")
            if abs(amount) > self.amount_limit:
                raise TlganError(
                    f"amount for {name!r} is {amount:g}, outside the allowed range "
                    f"[{-self.amount_limit:g}, {self.amount_limit:g}]; use a smaller move"
                )
            if amount != 0.0:
                clean[name] = amount
        for name in locks:
            if name in self.learned:
                raise TlganError(
                    f"in locks: {name!r} is a learned edit, which cannot be locked (its move depends on "
                    f"the face, so there is no fixed direction to hold); lock attribute axes only"
                )
            try:
                self.axes.index(name)
            except TlganError as exc:
                raise TlganError(f"in locks: {exc}") from None
        return clean, list(dict.fromkeys(locks))

    # -- model calls -----------------------------------------------------------------------

    def edit(self, base: torch.Tensor, amounts: dict[str, float], locks: Sequence[str]) -> torch.Tensor:
        """``base`` (``latent_shape``) moved by ``amounts`` with ``locks`` held fixed: what
        tlgan.editing.edit_latents gives (for wp, the same w move in every layer).

        The edit is base + sum_a amount_a * u_a, linear in the amounts, where u_a depends only
        on a and the other locks. Each u_a comes from edit_latents itself (a unit move from the
        origin) and is kept, so a click does not redo the locked-span decomposition for every
        move; the sum is formed in float64 as edit_latents forms it.

        Amounts of learned edits then apply, in their order (see :mod:`tlgan.studio.learned`),
        to the latent the axis moves made.
        """
        linear = {name: amount for name, amount in amounts.items() if name not in self.learned}
        if not linear:
            edited = base.clone()
        else:
            delta = torch.zeros(self.axes.dim, dtype=torch.float64)
            for name, amount in linear.items():
                others = tuple(sorted(set(locks) - {name}))
                delta += amount * self._direction(name, others)
            edited = base + delta.to(base.dtype)
        if self.learned and len(linear) < len(amounts):
            edited = apply_learned(edited, self.learned, amounts)
        return edited

    def _unit_move(self, name: str, locks: tuple[str, ...]) -> torch.Tensor:
        from tlgan.editing.edit import edit_latents

        origin = torch.zeros(self.axes.dim, dtype=torch.float64)
        return edit_latents(origin, self.axes, {name: 1.0}, list(locks))

    def synthesize(self, latents: torch.Tensor, tuned: TunedFace | None = None) -> torch.Tensor:
        """Images (N, 3, R, R) in [-1, 1], on the CPU, for latents (N, *latent_shape) of the studio's space,
        drawn by the shared generator, or by ``tuned``'s generator.

        Recent images are remembered, keyed by the latent's exact bytes (after ``tuned.key``
        for a tuned generator's): the page asks for a face's image (/api/render) and its scores
        (/api/probabilities) at the same moment, and whichever request comes second takes the
        image from here instead of running the generator again. Undo hits it too.
        """
        generator = self.generator if tuned is None else tuned.generator
        prefix = b"" if tuned is None else tuned.key
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
            with self._lock, torch.inference_mode():
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
        from tlgan.models.zoo import bundled_encoder as encoder_for

        choice: dict[str, Any] = {} if self.invert_steps is None else {"steps": int(self.invert_steps)}
        encoder = encoder_for(self.generator)
        if encoder is None:
            return choice
        try:
            check_encoder_for(encoder, self.generator, self.space)
        except TlganError as exc:
            log.info("not using the encoder of %r for %s uploads: %s", self.generator_name, self.space, exc)
            choice["encoder"] = None
        return choice

    # -- what requests use -------------------------------------------------------------------

    async def images(self, latents: torch.Tensor, tuned: TunedFace | None = None) -> torch.Tensor:
        """Images (N, 3, R, R) in [-1, 1], on the CPU, for latents (N, *latent_shape): batched with other requests'.

        Remembered images (see :meth:`synthesize`) come back without waiting for a batch. A
        ``tuned`` photo's generator serves only its own requests, so they never join the
        shared generator's batches: they run alone, like unbatched requests.
        """
        if tuned is not None:
            for row in latents:
                self._check_row(row)
            return await self.call(self.synthesize, latents, tuned)
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

    def _check_row(self, row: torch.Tensor) -> torch.Tensor:
        """One latent (``latent_shape``) for the generator's batch; a malformed one fails its own request only."""
        if not isinstance(row, torch.Tensor) or tuple(row.shape) != self.latent_shape:
            shape = tuple(row.shape) if isinstance(row, torch.Tensor) else type(row).__name__
            raise TlganError(
                f"a latent for generator {self.generator_name!r} must have shape {self.latent_shape} "
                f"(space {self.space!r}), not {shape}"
            )
        if not bool(torch.isfinite(row).all()):
            raise TlganError("latent holds NaN or infinite values; every entry must be a finite number")
        return row

    def _check_image(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or tuple(image.shape) != self.image_shape:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise TlganError(f"an image to score must have shape {self.image_shape}, not {shape}")
        return image

    async def aclose(self) -> None:
        """Stop batching (the server is shutting down); requests still queued get a 503."""
        await self.draw_batcher.aclose()
        await self.score_batcher.aclose()
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

    def probabilities_dict(self, probs: torch.Tensor) -> dict[str, float]:
        return {
            name: round(float(p), 6)
            for name, p in zip(self.classifier.attributes, probs.tolist(), strict=True)
        }


def create_app(
    generator: Generator,
    classifier: Classifier,
    axes: FeatureAxes,
    *,
    generator_name: str | None = None,
    classifier_name: str | None = None,
    amount_limit: float = AMOUNT_LIMIT,
    step: float = 0.5,
    slider_max: float = 5.0,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    batch_wait_ms: float = DEFAULT_WAIT_MS,
    space: str | None = None,
    invert_steps: int | None = None,
    max_tuned: int = DEFAULT_MAX_TUNED,
    tune_steps: int | None = None,
    learned: dict[str, Any] | None = None,
) -> FastAPI:
    """The studio app for these models and axes, editing the generator's latents of ``space``
    (default ``axes.space``; ``"wp"`` with axes fitted in w edits every layer's w alike).

    ``step`` is the amount one button press adds; ``amount_limit`` bounds |amount|;
    ``max_body_bytes`` bounds request bodies (uploads); ``max_batch`` and ``batch_wait_ms``
    set how concurrent requests share forward passes (see :mod:`tlgan.studio.batcher`;
    ``max_batch=1`` turns batching off). Uploads are inverted in ``invert_steps`` steps
    (default: the inversion's); with ``tune`` they are tuned for ``tune_steps`` steps (default:
    tune_generator's), and the studio keeps the ``max_tuned`` most recently used tuned generators
    (one copy of the weights each; 0 turns tuning off). ``learned`` {row name: DeltaModel} adds
    learned edits as rows after the axes (see :mod:`tlgan.studio.learned`; they must work in
    ``space``). Serve it with uvicorn, or test it with
    ``fastapi.testclient.TestClient(app)``; the batcher stops with the app's lifespan.
    """
    if not 0 < step <= amount_limit:
        raise TlganError(f"step must be in (0, amount_limit={amount_limit:g}], not {step!r}")
    studio = Studio(
        generator,
        classifier,
        axes,
        generator_name=generator_name,
        classifier_name=classifier_name,
        amount_limit=amount_limit,
        max_batch=max_batch,
        batch_wait_ms=batch_wait_ms,
        space=space,
        invert_steps=invert_steps,
        max_tuned=max_tuned,
        tune_steps=tune_steps,
        learned=learned,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await studio.aclose()

    app = FastAPI(
        title="tlgan studio",
        version=tlgan.__version__,
        description="Edit generated or uploaded faces along attribute axes. Requests are stateless: each names "
        "the face (seed or latent), the amounts (totals from the original) and the locks.",
        lifespan=lifespan,
    )
    app.state.studio = studio
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    _add_error_handlers(app)

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get(
        "/api/attributes", response_model=AttributesResponse, summary="Attributes, ranges and model names"
    )
    def attributes() -> AttributesResponse:
        scored = set(classifier.attributes)
        learned = [
            AttributeInfo(
                name=name,
                kind="learned",
                scored=name in scored,
                metrics=_jsonable({k: model.info[k] for k in ("unit", "factor", "space") if k in model.info}),
            )
            for name, model in studio.learned.items()
        ]
        return AttributesResponse(
            attributes=[
                AttributeInfo(name=a, scored=a in scored, metrics=_jsonable(axes.metrics.get(a, {})))
                for a in axes.attributes
            ]
            + learned,
            scored_attributes=list(classifier.attributes),
            amount_min=-studio.amount_limit,
            amount_max=studio.amount_limit,
            step=step,
            slider_max=min(slider_max, studio.amount_limit),
            generator=studio.generator_name,
            classifier=studio.classifier_name,
            axes_method=axes.method,
            space=studio.space,
            axes_space=axes.space,
            latent_shape=list(studio.latent_shape),
            latent_dim=studio.latent_dim,
            resolution=int(generator.img_resolution),
            max_upload_bytes=max_body_bytes,
            max_tuned=studio.tuning_capacity,
            version=app.version,
        )

    _add_face_routes(app, studio)
    _add_upload_routes(app, studio)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Bad input is a 422 naming the problem; a tuned id the server does not hold a 410; a failed model
    batch a 500; a closing server a 503."""

    @app.exception_handler(TlganError)
    async def _tlgan_error(request: Request, exc: TlganError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse({"detail": describe_validation_errors(exc.errors())}, status_code=422)

    @app.exception_handler(TunedFaceGone)
    async def _tuned_gone(request: Request, exc: TunedFaceGone):
        return JSONResponse({"detail": str(exc)}, status_code=410)

    @app.exception_handler(BatchFailed)
    async def _batch_failed(request: Request, exc: BatchFailed):
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.exception_handler(BatcherClosed)
    async def _closed(request: Request, exc: BatcherClosed):
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("studio: %s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error ({type(exc).__name__}); the server log has the details"},
            status_code=500,
        )


async def png(image: torch.Tensor, upscale: int = 1) -> bytes:
    """:func:`encode_png` outside the model lock: on the loop for small images, in a worker thread for large ones."""
    if image.shape[-1] * image.shape[-2] * upscale * upscale <= INLINE_PNG_PIXELS:
        return encode_png(image, upscale)
    return await run_in_threadpool(encode_png, image, upscale)


def _add_face_routes(app: FastAPI, studio: Studio) -> None:
    """/api/render and /api/probabilities: a face request -> images (and scores) through the studio's batchers."""

    def face(req: FaceRequest, with_original: bool) -> tuple[torch.Tensor, torch.Tensor, TunedFace | None]:
        """(edited latent, latents to draw (1 or 2, *latent_shape): the edit, then the original if asked,
        the tuned generator to draw them with or None for the shared one)."""
        tuned = studio.tuned.get(req.tuned_id) if req.tuned_id is not None else None
        base = studio.base_latent(req.seed, req.latent)
        amounts, locks = studio.check_moves(req.amounts, req.locks)
        edited = studio.edit(base, amounts, locks)
        return edited, (torch.stack([edited, base]) if with_original else edited[None]), tuned

    @app.post(
        "/api/render",
        response_model=RenderResponse,
        summary="Render an edited face",
        responses={
            **FACE_ERRORS,
            200: {"content": {"image/png": {}}, "description": "JSON (default) or PNG bytes with format=png"},
        },
    )
    async def render(req: RenderRequest):
        """Move the face by ``amounts`` along the attribute axes, keeping ``locks`` fixed, and draw it.

        The edited latent is base + sum_a amount_a * u_a, where u_a is a's unit axis made
        orthogonal to every locked axis other than a.
        """
        edited, latents, tuned = face(req, with_original=req.include_original and req.format == "json")
        images = await studio.images(latents, tuned)
        if req.format == "png":
            return Response(
                await png(images[0], req.upscale),
                media_type="image/png",
                headers={"Cache-Control": "no-store"},
            )
        probs = await studio.probabilities(images) if req.scores else None
        body: dict[str, Any] = {"image": data_url(await png(images[0], req.upscale)), "space": studio.space}
        if len(images) > 1:
            body["original_image"] = data_url(await png(images[1], req.upscale))
        if probs is not None:
            body["probabilities"] = studio.probabilities_dict(probs[0])
            if len(images) > 1:
                body["original_probabilities"] = studio.probabilities_dict(probs[1])
        return json_response(body, latent=edited)

    @app.post(
        "/api/probabilities",
        response_model=ProbabilitiesResponse,
        responses=FACE_ERRORS,
        summary="Classifier probabilities of an edited face",
    )
    async def probabilities(req: FaceRequest):
        """What the classifier sees in the face /api/render draws for the same request.

        Sent together with /api/render, the generator runs once: whichever request comes
        second reuses the image the first one made (or both share one batch).
        """
        _edited, latents, tuned = face(req, with_original=req.include_original)
        probs = await studio.probabilities(await studio.images(latents, tuned))
        body = {"probabilities": studio.probabilities_dict(probs[0])}
        if len(probs) > 1:
            body["original_probabilities"] = studio.probabilities_dict(probs[1])
        return json_response(body)


def _add_upload_routes(app: FastAPI, studio: Studio) -> None:
    """/api/score and /api/invert: uploads, rare and (inversion) slow, so they run alone in worker threads."""
    generator, classifier = studio.generator, studio.classifier

    @app.post(
        "/api/score",
        response_model=ScoreResponse,
        responses=ERRORS,
        summary="Classifier probabilities of an uploaded image",
    )
    def score(
        file: UploadFile = File(
            ...,
            description="An image file (PNG, JPEG, WebP, ...); it is centre-cropped to a square and resized.",
        ),
    ):
        image, _notes = read_image(
            file.file.read(), classifier.input_resolution, name=file.filename or "uploaded image"
        )
        probs = studio.score(image[None])[0]
        return ScoreResponse(
            probabilities=studio.probabilities_dict(probs), resolution=classifier.input_resolution
        )

    @app.post(
        "/api/invert",
        response_model=InvertResponse,
        responses={**ERRORS, 501: {"model": ErrorResponse, "description": "Inversion is not available"}},
        summary="Find the latent of an uploaded photo",
    )
    def invert(
        file: UploadFile = File(
            ...,
            description="A photo (PNG, JPEG, WebP, ...) of a face, roughly "
            "centred; it is cropped to a square.",
        ),
        tune: bool = Form(
            False,
            description="Also tune a copy of the generator to this photo (pivotal "
            "tuning around the latent found): a closer likeness whose "
            "edits still work. The response's `tuned_id` names it; only "
            "requests that carry that id use it.",
        ),
    ):
        """Invert the generator on the photo; edit the returned latent with /api/render.

        Takes a few seconds on a CPU (tuning as long again); other requests wait meanwhile
        (the models are shared). With ``tune`` the server keeps the tuned generator among
        its ``max_tuned`` most recently used ones.
        """
        data = file.file.read()
        if not data:
            raise TlganError("the uploaded file is empty; choose an image file (PNG, JPEG, WebP, ...)")
        if tune:
            studio.check_tuning()  # before seconds of inversion
        try:
            from tlgan.inversion import invert_image

            with studio.locked():
                # Searched in the studio's own space (W / W+ for a w / wp studio), so the latent
                # is one /api/render takes.
                latent, _reconstruction, info = invert_image(
                    generator, classifier, data, space=studio.space, **studio.inversion_options()
                )
        except ImportError as exc:
            # Missing inversion code (or a module it needs) is a feature this build lacks, not a bad request.
            log.warning("photo inversion unavailable: %s", exc)
            return JSONResponse(
                {
                    "detail": f"photo upload is not available in this build: tlgan.inversion."
                    f"invert_image cannot be used ({exc}); edit generated faces instead"
                },
                status_code=501,
            )
        # Validated like any latent a client sends, then rendered exactly as /api/render will
        # render it, so the page's "original" and its later edits come from the same path.
        latent = studio.base_latent(
            latent=torch.as_tensor(latent).detach().float().cpu().reshape(-1).tolist()
        )
        body: dict[str, Any] = {"space": studio.space, "info": _jsonable(info or {})}
        tuned = None
        if tune:
            tuned = studio.tune(data, latent, name=file.filename or "uploaded image")
            body["tuned_id"] = tuned.id
            body["info"]["tuned"] = _jsonable(tuned.info)
        images = studio.synthesize(latent[None], tuned)
        probs = studio.score(images)
        body.update(image=data_url(encode_png(images[0])), probabilities=studio.probabilities_dict(probs[0]))
        return json_response(body, latent=latent)


def app_from_specs(
    generator: str = "toyfaces-gan",
    classifier: str = "toyfaces-classifier",
    axes: str | None = None,
    device: str = "cpu",
    space: str | None = None,
    generator_options: dict[str, Any] | None = None,
    delta: Sequence[str] = (),
    **app_kwargs,
) -> FastAPI:
    """The studio app for model specs (registered names, folders, files; see tlgan.models).

    Faces are edited in ``space`` (default: w for StyleGAN generators, else z; with ``axes``:
    theirs). ``"wp"`` edits W+ latents (one w per layer, what photo uploads invert best
    into) along axes fitted in w. Without ``axes`` (a file from ``tlgan fit``) it uses
    :func:`tlgan.pipeline.default_axes`, which fits them once for the pair (in w for a wp
    studio) and caches them. ``generator_options`` (truncation) go to
    :func:`tlgan.models.load_generator`. ``delta`` lists folders of learned edits
    (``tlgan delta train``) to add as rows, in the order they apply; each must work in the
    studio's space.
    """
    from tlgan.models import load_classifier, load_generator
    from tlgan.pipeline import default_axes

    G = load_generator(generator, device, **(generator_options or {}))
    if space is not None:
        G.check_space(space)
    learned = load_learned_edits(delta, device=device) if delta else {}
    F = load_classifier(classifier, device)
    if axes:
        feature_axes = FeatureAxes.load(axes)
        if (
            space is not None
            and feature_axes.space != space
            and not (space == "wp" and feature_axes.space == "w")
        ):
            raise TlganError(
                f"{axes} holds axes in {feature_axes.space!r}, which cannot edit {space!r} faces; fit "
                f"axes in {'w' if space == 'wp' else space!r} or leave out --space"
            )
    else:
        space = space or G.default_space
        # A learned edit of another space fails now, not after minutes of fitting axes.
        check_learned_edits(learned, G, space, tuple(G.latent_shape(space)), (), generator)
        feature_axes = default_axes(
            generator,
            classifier,
            device=device,
            space="w" if space == "wp" else space,
            generator_options=G.options,
        )
    return create_app(
        G,
        F,
        feature_axes,
        generator_name=generator,
        classifier_name=classifier,
        space=space,
        learned=learned,
        **app_kwargs,
    )
