"""The studio's request and response models: they are its API documentation (``/docs``, ``/openapi.json``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from tlgan.studio.tuned import ID_PATTERN

AMOUNT_LIMIT = 10.0
"""Largest |amount| accepted per attribute, in units of latent distance along a unit axis."""
MAX_SEED = 2**31 - 1
MAX_LATENT_NUMBERS = 1 << 16
"""Most numbers in a request's latent (a 1024 px StyleGAN2's wp latent has 18 x 512 = 9,216)."""
MAX_LAYERS = 64
"""Most rows of a nested (wp) latent."""


class FaceRequest(BaseModel):
    """One face, the moves to apply to it, and the attributes to hold fixed."""

    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        examples=[7],
        description="Face number: the latent is sample SEED of the generator's seed-0 stream (the same face as "
        "`tlgan edit --seed SEED`). Give either `seed` or `latent`.",
    )
    latent: (
        Annotated[list[float], Field(max_length=MAX_LATENT_NUMBERS)]
        | Annotated[
            list[Annotated[list[float], Field(max_length=MAX_LATENT_NUMBERS)]], Field(max_length=MAX_LAYERS)
        ]
        | None
    ) = Field(
        None,
        description="The face's latent, as returned in `latent` by /api/render or /api/invert: a list of the "
        "studio's `latent_shape` numbers (D for z and w; num_ws x w_dim for wp, flat in row order or "
        "nested as num_ws lists of w_dim). Give either `seed` or `latent`.",
    )
    amounts: dict[str, float] = Field(
        default_factory=dict,
        examples=[{"Smiling": 1.5, "Beard": -1.0}],
        description=f"Row -> amount, |amount| <= {AMOUNT_LIMIT:g}: for an attribute axis the distance to move along "
        "its (unit) axis; for a learned edit (kind `learned` in /api/attributes) its alpha, in training "
        "steps of change. Amounts are totals from the original face, not increments. The axis moves "
        "come first, then each learned edit in the order /api/attributes lists them.",
    )
    locks: list[str] = Field(
        default_factory=list,
        examples=[["Male"]],
        description="Attributes whose axis projections stay unchanged while the others move (axes only).",
    )
    include_original: bool = Field(
        False, description="Also answer for the unedited face (saves a second request when the face changes)."
    )
    tuned_id: str | None = Field(
        None,
        pattern=ID_PATTERN,
        description="Draw the face with the generator tuned to an uploaded photo (the `tuned_id` /api/invert gave "
        "with `tune`). Without it the shared generator draws. An id the server no longer holds is "
        "answered with 410: upload the photo again.",
    )
    rotate: float | None = Field(
        None,
        examples=[15.0],
        description="StyleGAN3 only (`input_transform` in /api/attributes): turn the image by this many degrees "
        "(counter-clockwise) without a latent edit, as `tlgan edit --rotate`. Left out with `translate`: "
        "the server's own view.",
    )
    translate: Annotated[list[float], Field(min_length=2, max_length=2)] | None = Field(
        None,
        examples=[[0.1, -0.05]],
        description="StyleGAN3 only: move the image by [x, y] input units (the image spans 1; 1/R is one pixel), "
        "as `tlgan edit --translate X,Y`.",
    )


class RenderRequest(FaceRequest):
    """A face to draw; its scores come from /api/probabilities, or here with ``scores``."""

    format: Literal["json", "png"] = Field(
        "json",
        description="`json`: image as a base64 PNG with the edited latent; `png`: the edited face's PNG "
        "bytes only (include_original and scores do not apply).",
    )
    upscale: int = Field(
        1, ge=1, le=8, description="Nearest-neighbour enlargement of the PNG (1 = native size)."
    )
    scores: bool = Field(
        False,
        description="Also run the classifier and return `probabilities` (json format only). The page asks "
        "/api/probabilities in parallel instead, so the image does not wait for the classifier.",
    )


class RenderResponse(BaseModel):
    """The edited face."""

    image: str = Field(description="The edited face as a data URL (data:image/png;base64,...).")
    latent: list[float] = Field(
        description="The edited latent, flat in row order (the studio's `latent_shape` "
        "numbers); send it back as `latent` to continue from it."
    )
    space: str = Field(description="Latent space of `latent` (z, w or wp).")
    probabilities: dict[str, float] | None = Field(
        None, description="Classifier probability per attribute for the edited face (only with scores)."
    )
    original_image: str | None = Field(None, description="The unedited face (only with include_original).")
    original_probabilities: dict[str, float] | None = Field(
        None, description="Probabilities of the unedited face (only with include_original and scores)."
    )
    input_transform: dict[str, Any] | None = Field(
        None,
        description="The view the face was drawn in, {rotate, translate}, as `tlgan edit` records it (only when "
        "the request turned or moved it; with format=png in the X-Tlgan-Input-Transform header).",
    )


class ProbabilitiesResponse(BaseModel):
    """What the classifier sees in the edited face."""

    probabilities: dict[str, float] = Field(
        description="Classifier probability per attribute for the edited face."
    )
    original_probabilities: dict[str, float] | None = Field(
        None, description="Probabilities of the unedited face (only with include_original)."
    )


class AttributeInfo(BaseModel):
    name: str = Field(description="Row name, as used in `amounts` (and, for axes, `locks`).")
    kind: Literal["axis", "learned"] = Field(
        "axis",
        description="`axis`: a classifier attribute's linear axis; `learned`: a learned (possibly curved) "
        "edit from `tlgan delta train`, moved by its alpha and applied after the axes.",
    )
    scored: bool = Field(description="Whether the classifier gives a probability for it.")
    metrics: dict[str, Any] = Field(
        default_factory=dict, description="Quality figures of its axis from the fit."
    )


class AttributesResponse(BaseModel):
    attributes: list[AttributeInfo] = Field(
        description="Every row in display order: the attribute axes, then the "
        "learned edits (in the order they apply)."
    )
    scored_attributes: list[str] = Field(description="Every attribute the classifier scores.")
    amount_min: float = Field(description="Smallest accepted amount.")
    amount_max: float = Field(description="Largest accepted amount.")
    step: float = Field(description="Amount one press of a +/- button adds.")
    slider_max: float = Field(
        description="Half-width of the page's sliders (amounts beyond it pin the slider)."
    )
    generator: str = Field(description="Name of the generator.")
    classifier: str = Field(description="Name of the classifier.")
    axes_method: str = Field(description="How the axes were found (svm, glm, logistic, truth, ...).")
    space: str = Field(
        description="Latent space of the studio's faces (z, w or wp; wp faces move along w axes, "
        "the same move in every layer)."
    )
    axes_space: str = Field(description="Latent space the axes were fitted in.")
    latent_shape: list[int] = Field(
        description="Shape of one latent: [D] for z and w, [num_ws, w_dim] for wp."
    )
    latent_dim: int = Field(description="How many numbers a latent holds (the product of `latent_shape`).")
    resolution: int = Field(description="Side of the generated images in pixels.")
    max_upload_bytes: int = Field(description="Largest accepted request body in bytes.")
    max_tuned: int = Field(
        0,
        description="How many photos' tuned generators the server keeps (0: uploads cannot be "
        "tuned, because tuning is off or the generator has no weights).",
    )
    version: str = Field(description="tlgan version.")
    input_transform: dict[str, Any] | None = Field(
        None,
        description="For a generator with StyleGAN3's input transform: the server's own view {rotate, translate} "
        "(what a request without `rotate`/`translate` gets; null values when its matrix is no turn and "
        "move); null for generators without one.",
    )
    align: str | None = Field(None, description="How uploads are aligned (`ffhq`), or null: centre-cropped.")
    translations: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Translation models (`tlgan serve --translation`) that move uploaded photos without "
        "inversion: {name, attribute, amount (trained)} each, in the order they apply (/api/translate).",
    )


class ScoreResponse(BaseModel):
    probabilities: dict[str, float] = Field(description="Classifier probability per attribute.")
    resolution: int = Field(description="Side in pixels the image was resized to before scoring.")


class InvertResponse(BaseModel):
    image: str = Field(description="The reconstruction (the generator's image of `latent`) as a data URL.")
    latent: list[float] = Field(
        description="Latent whose image best matches the photo, searched in the studio's "
        "space and flat in row order; edit it via /api/render."
    )
    probabilities: dict[str, float] = Field(description="Classifier probabilities of the reconstruction.")
    space: str = Field(description="Latent space of `latent`.")
    info: dict[str, Any] = Field(
        default_factory=dict,
        description="What the inversion reports (PSNR, time, ...); "
        "with `tune` also `tuned` (its PSNR, steps, time).",
    )
    tuned_id: str | None = Field(
        None,
        description="With `tune`: the id of the generator tuned to this photo. Send it as `tuned_id` with "
        "every request for this face; the image above is already that generator's.",
    )
    input_image: str | None = Field(
        None,
        description="The face as the generator's inputs saw it (aligned, or centre-cropped), at the generator's "
        "resolution, as a PNG data URL: send it as `image` to /api/translate.",
    )
    aligned_image: str | None = Field(
        None, description="With `serve --align ffhq`: the aligned face (PNG data URL)."
    )
    alignment: dict[str, Any] | None = Field(
        None,
        description="With `serve --align ffhq`: where the aligned face lies in the photo (the transform `tlgan "
        "align` saves); send it with the photo to /api/paste-back.",
    )


class FaceResponse(BaseModel):
    input_image: str = Field(
        description="The face as /api/invert would give it for the same file (aligned, or centre-cropped), at "
        "the generator's resolution, as a PNG data URL: send it as `image` to /api/translate."
    )
    aligned_image: str | None = Field(
        None, description="With `serve --align ffhq`: the aligned face (PNG data URL)."
    )
    alignment: dict[str, Any] | None = Field(
        None,
        description="With `serve --align ffhq`: where the aligned face lies in the photo; send it with the "
        "photo to /api/paste-back.",
    )


class ErrorResponse(BaseModel):
    detail: str = Field(description="What was wrong with the request and how to fix it.")


ERRORS = {
    413: {"model": ErrorResponse, "description": "Body too large"},
    422: {"model": ErrorResponse, "description": "Invalid input; `detail` says what and how to fix it"},
}
FACE_ERRORS = {
    **ERRORS,
    410: {
        "model": ErrorResponse,
        "description": "The `tuned_id` is not held (any more); upload the photo again",
    },
}
