"""What the studio does with uploaded photos besides inverting them: FFHQ alignment, the edit pasted
back into the photo, and translation models that move the photo without inversion.

- **Alignment** (``tlgan serve --align ffhq``): every upload is cut out as FFHQ's faces were
  (:func:`tlgan.alignment.align_photo`, the largest face, at the generator's resolution); the
  inversion and the translations see the aligned face, and the response carries the transform.
- **Paste-back**: the edited face warped back into the photo through that transform
  (:func:`tlgan.alignment.paste_back`, adding the change from the unedited face, as
  ``tlgan edit --paste-back`` does by default). The page sends the photo and the transform
  again, so the server keeps no photo.
- **Translations** (``tlgan serve --translation DIR``): :func:`tlgan.translate.translate` on the
  face the inversion saw, models applied in the order given, each by its amount.

Nothing here runs without a photo. Alignment and translations hold this module's own lock, not the
studio's model lock, so an upload's face is prepared and translated while an inversion holds that.
"""

from __future__ import annotations

import base64
import binascii
import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, Field

from tlgan.errors import TlganError
from tlgan.registry import unknown_name_message
from tlgan.studio.schema import AMOUNT_LIMIT, FaceRequest

if TYPE_CHECKING:
    from tlgan.alignment import FaceTransform, LandmarkDetector
    from tlgan.studio.server import Studio
    from tlgan.translate import TranslationModel

ALIGN_METHODS = ("ffhq",)
MAX_INPUT_IMAGE_BYTES = 8 * 1024 * 1024
"""Largest decoded PNG accepted as /api/translate's ``image`` (a 1024 px face is about 3 MB)."""


class TranslateRequest(BaseModel):
    """An uploaded face (``input_image`` of /api/face or /api/invert) and the translation rows' amounts."""

    image: str = Field(
        description="The face at the generator's resolution as a PNG data URL (data:image/png;base64,...): the "
        "`input_image` /api/face (or /api/invert) gave for the photo."
    )
    amounts: dict[str, float] = Field(
        default_factory=dict,
        examples=[{"Eyeglasses translation": 1.0}],
        description="Translation row -> amount in the latent units its model was trained in (0: the identity "
        "network). Rows left out move by 0. The models apply in the order /api/attributes lists them.",
    )
    format: str = Field(
        "png", pattern="^(png|json)$", description="`png`: the image's bytes; `json`: a data URL."
    )


class PasteBackRequest(FaceRequest):
    """A face request (the edit to paste) and where its aligned face lies in the photo sent with it."""

    alignment: dict[str, Any] = Field(description="The `alignment` /api/invert gave for this photo.")


@dataclass(frozen=True)
class AlignedUpload:
    """An upload's face as the generator sees it: ``image`` (R, R, 3) uint8, its ``png`` bytes, and the
    ``transform`` into the photo (None when the photo was centre-cropped, not aligned)."""

    image: np.ndarray
    png: bytes
    transform: FaceTransform | None = None


def png_bytes(array: np.ndarray) -> bytes:
    """Lossless PNG of an (H, W, 3) uint8 image."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array), "RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1], as the inversion reads a photo."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float() / 127.5 - 1.0


def decode_data_url(url: str, resolution: int) -> np.ndarray:
    """The (R, R, 3) uint8 image of a PNG data URL; TlganError unless it is a PNG of R x R pixels."""
    head, _, payload = url.partition(",")
    if head != "data:image/png;base64" or not payload:
        raise TlganError(
            "image must be a PNG data URL (data:image/png;base64,...): send the `input_image` /api/invert gave"
        )
    try:
        data = base64.b64decode(payload, validate=True)
        if len(data) > MAX_INPUT_IMAGE_BYTES:
            raise ValueError("too large")
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG" or img.size != (resolution, resolution):
                raise ValueError(f"{img.format} {img.size[0]}x{img.size[1]}")
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (binascii.Error, ValueError, OSError) as exc:
        raise TlganError(
            f"image is not a {resolution} x {resolution} PNG ({exc}); send the `input_image` /api/invert gave"
        ) from None
    return array.copy()


def transform_from_dict(d: Mapping[str, Any]) -> FaceTransform:
    """A :class:`~tlgan.alignment.FaceTransform` from the ``alignment`` dict a response gave; TlganError if malformed."""
    from tlgan.alignment import FaceTransform

    try:
        matrix = np.asarray(d["aligned_to_photo"], dtype=np.float64)
        size = int(d["size"])
        photo_size = (int(d["photo_size"][0]), int(d["photo_size"][1]))
        quad = np.asarray(d["quad"], dtype=np.float64)
        margins = tuple(float(v) for v in d.get("margins", (0, 0, 0, 0)))
        if (
            matrix.shape != (3, 3)
            or not np.isfinite(matrix).all()
            or abs(np.linalg.det(matrix[:2, :2])) < 1e-9
        ):
            raise ValueError("aligned_to_photo must be an invertible finite 3 x 3 matrix")
        if size < 1 or min(photo_size) < 1 or quad.shape != (4, 2) or len(margins) != 4:
            raise ValueError("size, photo_size, quad or margins")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise TlganError(
            f"alignment is not the transform /api/invert gave ({exc}); upload the photo again"
        ) from None
    return FaceTransform(matrix, size, photo_size, quad, margins=margins)  # type: ignore[arg-type]


class PhotoTools:
    """Alignment, paste-back and translations for one studio's uploads.

    ``align``: None (uploads are centre-cropped) or "ffhq"; the landmark detector loads here,
    so a missing ``tlgan[align]`` fails at start with the command that installs it.
    ``translations`` {row name: TranslationModel} in the order they apply; each must work at
    the generator's resolution (TlganError naming the model otherwise).
    """

    def __init__(
        self,
        studio: Studio,
        align: str | None = None,
        translations: Mapping[str, TranslationModel] | None = None,
        detector: LandmarkDetector | None = None,
    ):
        if align not in (None, "none", *ALIGN_METHODS):
            raise TlganError(f"align must be one of {', '.join(ALIGN_METHODS)} (or none), not {align!r}")
        self.studio = studio
        # dlib's models and the translation networks are shared by the requests, but not with the
        # generator: their own lock, so a photo is prepared and translated while another inverts.
        self._lock = threading.Lock()
        self.resolution = int(studio.generator.img_resolution)
        self.align = None if align in (None, "none") else align
        self.detector = None
        if self.align is not None:
            if detector is None:
                from tlgan.alignment import LandmarkDetector

                detector = LandmarkDetector()
            self.detector = detector
        self.translations = dict(translations or {})
        for name, model in self.translations.items():
            if model.resolution != self.resolution:
                raise TlganError(
                    f"translation {name!r} works at {model.resolution} px, but generator "
                    f"{studio.generator_name!r} draws {self.resolution} px faces; train a translation for "
                    f"this generator (`tlgan train translate --generator ...`)"
                )
            model.identity.eval()
            model.edited.eval()

    def describe(self) -> list[dict[str, Any]]:
        """The translation rows for /api/attributes: {name, attribute, amount} each, in order."""
        return [
            {"name": name, "attribute": model.attribute, "amount": float(model.amount)}
            for name, model in self.translations.items()
        ]

    # -- uploads ------------------------------------------------------------------------------

    def prepare(self, data: bytes, name: str) -> AlignedUpload | None:
        """The upload's face at the generator's resolution: aligned as FFHQ's (the largest face) with
        ``align``, else centre-cropped as the inversion crops it (for the translations; None when the
        studio has neither). NoFaceFound (a TlganError) names the photo when it has no face."""
        if self.align is None and not self.translations:
            return None
        if self.align is None:
            from tlgan.imaging import read_image, to_uint8

            image, _notes = read_image(data, self.resolution, name=name)
            array = to_uint8(image)
            return AlignedUpload(array, png_bytes(array))
        from tlgan.alignment import align_photo, read_photo

        photo = read_photo(data, name=name)
        with self._lock:
            (found,) = align_photo(
                photo, size=self.resolution, face="largest", detector=self.detector, label=name
            )
        return AlignedUpload(found.image, png_bytes(found.image), found.transform)

    def paste_back(
        self, data: bytes, name: str, transform: FaceTransform, face: torch.Tensor, reference: torch.Tensor
    ) -> bytes:
        """PNG bytes of the photo ``data`` with ``face`` (3, R, R) in [-1, 1] pasted back, adding its change
        from ``reference`` (3, R, R), the unedited face: ``tlgan edit --paste-back``'s default mode."""
        from tlgan.alignment import paste_back, read_photo
        from tlgan.imaging import to_uint8

        photo = read_photo(data, name=name)
        pasted = paste_back(photo, to_uint8(face), transform, reference=to_uint8(reference))
        return png_bytes(pasted)

    # -- translations -------------------------------------------------------------------------

    def check_amounts(self, amounts: Mapping[str, float]) -> dict[str, float]:
        """Every translation row's amount (0 for rows left out); TlganError for unknown rows or bad numbers."""
        if not self.translations:
            raise TlganError(
                "this studio has no translation models; start it with `tlgan serve --translation DIR`"
            )
        for row, amount in amounts.items():
            if row not in self.translations:
                raise TlganError(unknown_name_message("translation", row, list(self.translations)))
            if not np.isfinite(amount) or abs(float(amount)) > AMOUNT_LIMIT:
                raise TlganError(
                    f"amount for {row!r} is {amount:g}; give a finite amount within +-{AMOUNT_LIMIT:g}"
                )
        return {row: float(amounts.get(row, 0.0)) for row in self.translations}

    def translate(self, image: np.ndarray, amounts: Mapping[str, float]) -> torch.Tensor:
        """The face (R, R, 3) uint8 moved by every translation row in order: (3, R, R) in [-1, 1].

        One model gives exactly :func:`tlgan.translate.translate` (image, model, amount).
        """
        from tlgan.translate import translate

        clean = self.check_amounts(amounts)
        x = to_tensor(image)[None]
        with self._lock, torch.inference_mode():
            for row, model in self.translations.items():
                x = translate(x, model, clean[row])
        return x[0].float().cpu().clone()


def translation_rows(models: Sequence[TranslationModel]) -> dict[str, TranslationModel]:
    """Row names for translation models: "ATTRIBUTE translation", numbered when an attribute repeats."""
    rows: dict[str, TranslationModel] = {}
    for model in models:
        name = f"{model.attribute} translation"
        k = 2
        while name in rows:
            name = f"{model.attribute} translation {k}"
            k += 1
        rows[name] = model
    return rows


def check_photo_options(
    generator: Any, generator_name: str, translation: Sequence[str], align: str | None, device: str
) -> dict[str, TranslationModel]:
    """``tlgan serve``'s photo options checked at start: the translation models (loaded, as rows) at the
    generator's resolution, and for ``align`` "ffhq" dlib and its landmark model present (TlganError
    with ``pip install 'tlgan[align]'`` otherwise)."""
    from tlgan.translate import load_translation

    if align not in (None, "none"):
        if align not in ALIGN_METHODS:
            raise TlganError(f"--align takes {', '.join(ALIGN_METHODS)} or none, not {align!r}")
        from tlgan.alignment import LandmarkDetector

        LandmarkDetector()  # dlib and the landmark model, or the install command
    resolution = int(generator.img_resolution)
    models = []
    for path in translation:
        model = load_translation(path, device)
        if model.resolution != resolution:
            raise TlganError(
                f"--translation {path}: the model works at {model.resolution} px, but generator "
                f"{generator_name!r} draws {resolution} px faces; train one for this generator "
                f"(`tlgan train translate --generator {generator_name} ...`)"
            )
        models.append(model)
    rows = translation_rows(models)
    return rows
