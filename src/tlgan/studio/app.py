"""The web studio's routes: a JSON API over the editing functions, and the page that uses it.

Every request is self-contained: it names the face (a ``seed`` or a ``latent``), the
attribute ``amounts`` and the ``locks``; the browser keeps that state and its undo history.
So several tabs and users never see each other's edits, and any response can be
reproduced from its request alone.

The studio has three layers. What a request means, the latent it asks to draw, is decided by
:class:`~tlgan.studio.faces.Faces` (pure arithmetic, no models). The models run in the model
server, :class:`~tlgan.studio.server.Studio` (the model lock, remembered images, the batchers,
the tuned generators, the threads). This module is the HTTP face over both: it reads requests
(their models are in :mod:`tlgan.studio.schema`), asks the two layers, and encodes the answers;
PNG encoding happens here, outside the model lock. :mod:`tlgan.studio.serving` holds the HTTP
plumbing (body limit, readable validation errors, serving on a socket).

Endpoints (the OpenAPI schema at ``/openapi.json`` and the pages ``/docs`` describe them):

- ``GET  /``                 the studio page (plain HTML/CSS/JS shipped in ``static/``);
- ``GET  /api/attributes``   row names (attribute axes, then learned edits, each with its kind), the
  allowed amount range, model names;
- ``POST /api/render``       face + amounts + locks -> image and edited latent;
- ``POST /api/probabilities`` face + amounts + locks -> the classifier's probabilities;
- ``POST /api/score``        an uploaded image -> the classifier's probabilities;
- ``POST /api/invert``       an uploaded photo -> its latent and reconstruction (with ``tune``: also
  a generator tuned to the photo, named by ``tuned_id``; see :mod:`tlgan.studio.tuned`).
- ``POST /api/face``, ``/api/translate``, ``/api/paste-back``: an uploaded face without inversion,
  moved by translation models, the edit pasted back in the photo (:mod:`tlgan.studio.photo_routes`).

A face request may also carry ``rotate``/``translate``: StyleGAN3's input transform for that
request only (see :mod:`tlgan.studio.view`).

Faces live in the studio's space: z, w, or wp (W+, latents (num_ws, w_dim), moved along w
axes by the same step in every layer). Learned edits (:mod:`tlgan.studio.learned`) are rows
too, moved through the same ``amounts`` and applied after the axes. A request carrying a
``tuned_id`` is drawn by that photo's tuned generator, outside the shared generator's
batches; every other request is untouched by tuning.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

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
from tlgan.io import json_safe
from tlgan.models.base import Classifier, Generator
from tlgan.studio.batcher import DEFAULT_MAX_BATCH, DEFAULT_WAIT_MS, BatcherClosed, BatchFailed
from tlgan.studio.faces import LATENT_LIMIT
from tlgan.studio.learned import check_learned_edits, load_learned_edits
from tlgan.studio.photo_routes import (
    EMPTY_UPLOAD,
    add_photo_routes,
    photo_info,
    request_view,
    upload_body,
    view_header,
)
from tlgan.studio.schema import (
    AMOUNT_LIMIT,
    ERRORS,
    FACE_ERRORS,
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
from tlgan.studio.server import IMAGE_MEMO_BYTES, INLINE_SECONDS, ImageMemo, Studio
from tlgan.studio.serving import (
    MAX_BODY_BYTES,
    BodyLimitMiddleware,
    ServerThread,
    bind_socket,
    describe_validation_errors,
    url_of,
)
from tlgan.studio.tuned import DEFAULT_MAX_TUNED, TunedFace, TunedFaceGone
from tlgan.studio.view import View
from tlgan.studio.words import add_words_routes

log = logging.getLogger(__name__)

# The model server, the faces and the serving helpers live in their own modules; what callers
# imported from here before the split stays importable from here.
__all__ = [
    "Studio",
    "ImageMemo",
    "LATENT_LIMIT",
    "INLINE_SECONDS",
    "IMAGE_MEMO_BYTES",
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

INLINE_PNG_PIXELS = 128 * 128
"""PNGs of at most this many pixels are encoded on the event loop; larger ones in a worker thread."""

# The page is served with this policy: everything comes from the package itself, nothing
# from a CDN; images arrive as data: URLs (renders) or blob: URLs (downloads, uploads).
PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


# ----------------------------------------------------------------------------------------------
# Encoding answers.


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


def _info_json(info: Any) -> Any:
    """A JSON-safe copy of an info or metrics dict of unknown size, short enough for the page."""
    return json_safe(info, max_items=64, max_depth=4)


# ----------------------------------------------------------------------------------------------
# The app and its routes.


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
    align: str | None = None,
    translations: dict[str, Any] | None = None,
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
    ``space``). ``align`` "ffhq" aligns every upload as FFHQ's faces (``tlgan[align]``);
    ``translations`` {row name: TranslationModel} move uploaded photos without inversion (see
    :mod:`tlgan.studio.photos`). Serve it with uvicorn, or test it with
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
    from tlgan.studio.photos import PhotoTools

    photos = PhotoTools(studio, align=align, translations=translations)

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
    app.state.photos = photos
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
        # the studio's own axes and classifier: rows added from words (tlgan.studio.words) join them
        axes, classifier = studio.axes, studio.classifier
        scored = set(classifier.attributes)
        learned = [
            AttributeInfo(
                name=name,
                kind="learned",
                scored=name in scored,
                metrics=_info_json(
                    {k: model.info[k] for k in ("unit", "factor", "space") if k in model.info}
                ),
            )
            for name, model in studio.learned.items()
        ]
        return AttributesResponse(
            attributes=[
                AttributeInfo(name=a, scored=a in scored, metrics=_info_json(axes.metrics.get(a, {})))
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
            **photo_info(studio, photos),
        )

    _add_face_routes(app, studio)
    _add_upload_routes(app, studio)
    add_photo_routes(app, studio, photos)
    add_words_routes(app)  # answer "not available" unless app_from_run gives it a CLIP run
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
        edited, base = studio.faces.resolve(req.seed, req.latent, req.amounts, req.locks)
        return edited, (torch.stack([edited, base]) if with_original else edited[None]), tuned

    def drawn_in(req: FaceRequest) -> tuple[View | None, dict[str, Any]]:
        """The request's view, and the response metadata recording it."""
        view = request_view(studio, req)
        return view, ({} if view is None else {"input_transform": view.to_dict()})

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
        view, meta = drawn_in(req)
        edited, latents, tuned = face(req, with_original=req.include_original and req.format == "json")
        images = await studio.images(latents, tuned, view)
        if req.format == "png":
            return Response(
                await png(images[0], req.upscale),
                media_type="image/png",
                headers={"Cache-Control": "no-store", **view_header(meta)},
            )
        probs = await studio.probabilities(images) if req.scores else None
        body: dict[str, Any] = {
            "image": data_url(await png(images[0], req.upscale)),
            "space": studio.space,
            **meta,
        }
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
        view, _meta = drawn_in(req)
        _edited, latents, tuned = face(req, with_original=req.include_original)
        probs = await studio.probabilities(await studio.images(latents, tuned, view))
        body = {"probabilities": studio.probabilities_dict(probs[0])}
        if len(probs) > 1:
            body["original_probabilities"] = studio.probabilities_dict(probs[1])
        return json_response(body)


def _add_upload_routes(app: FastAPI, studio: Studio) -> None:
    """/api/score and /api/invert: uploads, rare and (inversion) slow, so they run alone in worker threads."""
    classifier = studio.classifier

    @app.post(
        "/api/score",
        response_model=ScoreResponse,
        responses=ERRORS,
        summary="Classifier probabilities of an uploaded image",
    )
    def score(
        file: Annotated[
            UploadFile,
            File(
                description="An image file (PNG, JPEG, WebP, ...); it is centre-cropped to a square and resized."
            ),
        ],
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
        file: Annotated[
            UploadFile,
            File(
                description="A photo (PNG, JPEG, WebP, ...) of a face, roughly centred; it is cropped to a square."
            ),
        ],
        tune: Annotated[
            bool,
            Form(
                description="Also tune a copy of the generator to this photo (pivotal tuning around the latent "
                "found): a closer likeness whose edits still work. The response's `tuned_id` names it; only "
                "requests that carry that id use it."
            ),
        ] = False,
    ):
        """Invert the generator on the photo; edit the returned latent with /api/render.

        Takes a few seconds on a CPU (tuning as long again); other requests wait meanwhile
        (the models are shared). With ``tune`` the server keeps the tuned generator among
        its ``max_tuned`` most recently used ones.
        """
        data = file.file.read()
        if not data:
            raise TlganError(EMPTY_UPLOAD)
        if tune:
            studio.check_tuning()  # before seconds of inversion
        upload = app.state.photos.prepare(data, file.filename or "uploaded image")
        if upload is not None and upload.transform is not None:
            data = upload.png  # the aligned face is what the generator inverts (and tunes to)
        try:
            latent, info = studio.invert(data)
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
        latent = studio.faces.base_latent(
            latent=torch.as_tensor(latent).detach().float().cpu().reshape(-1).tolist()
        )
        body: dict[str, Any] = {"space": studio.space, "info": _info_json(info or {}), **upload_body(upload)}
        tuned = None
        if tune:
            tuned = studio.tune(data, latent, name=file.filename or "uploaded image")
            body["tuned_id"] = tuned.id
            body["info"]["tuned"] = _info_json(tuned.info)
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
    translation: Sequence[str] = (),
    attributes: dict | None = None,
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
    studio's space. ``translation`` lists translation model folders (``tlgan train translate``)
    for uploads, and ``align="ffhq"`` aligns uploads: both are checked here, before any fitting.
    studio's space. ``attributes`` ({name: Prompt}) are a ``clip:`` classifier's attributes in words.
    """
    from tlgan.models import load_classifier, load_generator
    from tlgan.pipeline import default_axes
    from tlgan.studio.photos import check_photo_options

    G = load_generator(generator, device, **(generator_options or {}))
    if space is not None:
        G.check_space(space)
    learned = load_learned_edits(delta, device=device) if delta else {}
    if translation or app_kwargs.get("align"):
        app_kwargs["translations"] = check_photo_options(
            G, generator, translation, app_kwargs.get("align"), device
        )
    F = load_classifier(classifier, device, attributes=attributes)
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
            # StyleGAN3's input transform turns and moves the view, not the face: axes are shared.
            generator_options={k: v for k, v in G.options.items() if k != "input_transform"},
            attributes=attributes,
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
