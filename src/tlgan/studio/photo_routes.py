"""The studio's routes for views and uploaded photos beyond inversion.

- ``POST /api/face``       an uploaded photo -> the face /api/invert would see (aligned with
  ``serve --align ffhq``, else centre-cropped) and its alignment, without inverting it: the
  translation rows work on it at once, while /api/invert still searches for the latent;
- ``POST /api/translate``  an uploaded face (the ``input_image`` /api/invert gave) + the translation
  rows' amounts -> the face translated (one or two forward passes per model, see
  :func:`tlgan.translate.translate`), no inversion;
- ``POST /api/paste-back`` the photo again + a face request + the ``alignment`` /api/invert gave ->
  the whole photo with the edited face warped back in (PNG), as ``tlgan edit --paste-back``.

And the helpers the face routes of :mod:`tlgan.studio.app` use for StyleGAN3's per-request view
(:mod:`tlgan.studio.view`) and the alignment fields of /api/invert (:mod:`tlgan.studio.photos`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import Response
from pydantic import ValidationError

from tlgan.errors import TlganError
from tlgan.studio.photos import (
    PasteBackRequest,
    PhotoTools,
    TranslateRequest,
    decode_data_url,
    transform_from_dict,
)
from tlgan.studio.schema import ERRORS, FACE_ERRORS, FaceRequest, FaceResponse
from tlgan.studio.serving import describe_validation_errors
from tlgan.studio.view import View, check_view, transform_buffer, view_of

if TYPE_CHECKING:
    from tlgan.studio.server import Studio

# The words of /api/invert's refusal of an empty file (a test holds the two routes to the same words).
EMPTY_UPLOAD = "the uploaded file is empty; choose an image file (PNG, JPEG, WebP, ...)"
PNG_RESPONSE = {200: {"content": {"image/png": {}}, "description": "PNG bytes"}}


def request_view(studio: Studio, req: FaceRequest) -> View | None:
    """The turn and move a face request asks for (None: the generator's own); TlganError for a generator without."""
    view = View.parse(req.rotate, req.translate)
    check_view(studio.generator, view, studio.generator_name)
    return view


def view_header(meta: dict[str, Any]) -> dict[str, str]:
    """A PNG response's record of its view: the X-Tlgan-Input-Transform header (JSON), when turned or moved."""
    if "input_transform" not in meta:
        return {}
    return {"X-Tlgan-Input-Transform": json.dumps(meta["input_transform"], separators=(",", ":"))}


def photo_info(studio: Studio, photos: PhotoTools) -> dict[str, Any]:
    """/api/attributes' view, alignment and translation fields."""
    view = view_of(studio.generator)
    if transform_buffer(studio.generator) is None:
        transform = None
    elif view is None:  # a matrix that is no turn and move: the sliders cannot show it
        transform = {"rotate": None, "translate": None}
    else:
        transform = view.to_dict()
    return {"input_transform": transform, "align": photos.align, "translations": photos.describe()}


def upload_body(upload: Any) -> dict[str, Any]:
    """/api/invert's fields for the face the generator saw: the input image, and with alignment the
    aligned face and its transform."""
    from tlgan.studio.app import data_url

    if upload is None:
        return {}
    body: dict[str, Any] = {"input_image": data_url(upload.png)}
    if upload.transform is not None:
        body.update(aligned_image=body["input_image"], alignment=upload.transform.to_dict())
    return body


def add_photo_routes(app: FastAPI, studio: Studio, photos: PhotoTools) -> None:
    """/api/face, /api/translate and /api/paste-back: rare, per-photo work, run in worker threads (the face
    and the translations under the photo tools' own lock, so they need not wait for an inversion)."""

    @app.post(
        "/api/face",
        response_model=FaceResponse,
        responses=ERRORS,
        summary="Prepare an uploaded face for the translation rows, without inverting it",
    )
    def prepare_face(
        file: Annotated[
            UploadFile,
            File(description="The photo (PNG, JPEG, WebP, ...) that will be sent to /api/invert."),
        ],
    ):
        """The face the generator's inputs would see: byte for byte /api/invert's ``input_image`` (and, with
        ``serve --align ffhq``, its ``aligned_image`` and ``alignment``) for the same file, in a fraction of
        the time. Needs translation rows or alignment (422 otherwise: upload to /api/invert alone)."""
        from tlgan.studio.app import json_response

        data = file.file.read()
        if not data:
            raise TlganError(EMPTY_UPLOAD)
        upload = photos.prepare(data, file.filename or "uploaded image")
        if upload is None:
            raise TlganError(
                "this studio neither aligns nor translates uploads, so there is no face to prepare; upload "
                "the photo to /api/invert, or start the studio with `tlgan serve --translation DIR` or `--align ffhq`"
            )
        return json_response(upload_body(upload))

    @app.post(
        "/api/translate",
        responses={**ERRORS, **PNG_RESPONSE},
        summary="Move an uploaded face with the translation models (no inversion)",
    )
    def translate_photo(req: TranslateRequest):
        """The uploaded face translated by each translation row's amount, models applied in order
        (one model: exactly ``tlgan.translate.translate(face, model, amount)``)."""
        from tlgan.studio.app import data_url, encode_png

        amounts = photos.check_amounts(req.amounts)  # before decoding the image
        image = decode_data_url(req.image, photos.resolution)
        out = encode_png(photos.translate(image, amounts))
        if req.format == "json":
            return {"image": data_url(out), "amounts": amounts}
        return Response(out, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post(
        "/api/paste-back",
        responses={**FACE_ERRORS, **PNG_RESPONSE},
        summary="The whole photo with the edited face pasted back (uploads aligned with --align ffhq)",
    )
    def paste_back_photo(
        file: Annotated[UploadFile, File(description="The photo that was uploaded to /api/invert.")],
        request: Annotated[
            str,
            Form(
                description="JSON: a face request (latent, amounts, locks, tuned_id, rotate, translate) and the "
                "`alignment` /api/invert gave for this photo."
            ),
        ],
    ):
        """The edited face warped back into the photo: the change from the unedited face is added inside
        the feathered face square, and every pixel outside it stays the photo's own (the default mode
        of ``tlgan edit --paste-back``)."""
        try:
            req = PasteBackRequest.model_validate_json(request)
        except ValidationError as exc:
            raise TlganError("request: " + describe_validation_errors(exc.errors())) from None
        transform = transform_from_dict(req.alignment)
        view = request_view(studio, req)
        tuned = studio.tuned.get(req.tuned_id) if req.tuned_id is not None else None
        edited, base = studio.faces.resolve(req.seed, req.latent, req.amounts, req.locks)
        data = file.file.read()
        if not data:
            raise TlganError("the uploaded photo is empty; send the photo that was uploaded to /api/invert")
        # One face per draw, as `tlgan edit` draws the edit and its reference.
        face = studio.synthesize(edited[None], tuned, view)[0]
        reference = studio.synthesize(base[None], tuned, view)[0]
        out = photos.paste_back(data, file.filename or "uploaded photo", transform, face, reference)
        return Response(out, media_type="image/png", headers={"Cache-Control": "no-store"})
