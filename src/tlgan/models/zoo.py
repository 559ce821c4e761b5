"""The built-in models: the toyfaces renderer, and the bundled networks trained by tlgan's own
commands on the toyfaces world, shipped as safetensors + JSON under ``tlgan/models/weights/``
and loaded without any download."""

from __future__ import annotations

import logging
import weakref
from pathlib import Path

import torch

from tlgan.errors import TlganError
from tlgan.models import CLASSIFIERS, GENERATORS
from tlgan.models.base import Generator

WEIGHTS = Path(__file__).parent / "weights"

log = logging.getLogger(__name__)


def bundled_path(name: str) -> Path:
    path = WEIGHTS / name
    if not (path / "model.json").is_file():
        raise TlganError(
            f"bundled weights for {name!r} are missing from {path}; reinstall tlgan, "
            f"or retrain them with the commands in README.md"
        )
    return path


@GENERATORS.register("toyfaces-render", "Analytic toyfaces renderer with known attribute axes (64 px, z 512)")
def toyfaces_render():
    from tlgan.toyfaces.generator import ToyfacesRenderer

    return ToyfacesRenderer()


@GENERATORS.register(
    "toyfaces-gan", "DCGAN-style generator trained on toyfaces renders (bundled, 64 px, z 512)"
)
def toyfaces_gan():
    from tlgan.models.formats.folder import load_pretrained

    return load_pretrained(bundled_path("toyfaces-gan"))


@CLASSIFIERS.register("toyfaces-classifier", "CNN attribute classifier trained on toyfaces renders (bundled)")
def toyfaces_classifier():
    from tlgan.models.formats.folder import load_pretrained

    return load_pretrained(bundled_path("toyfaces-classifier"))


@GENERATORS.register(
    "toyfaces-style",
    "Style-based toyfaces: fixed seeded mapping z -> w (attributes linear in w), wp layer groups, renderer",
)
def toyfaces_style():
    from tlgan.toyfaces.style import ToyfacesStyle

    return ToyfacesStyle()


@GENERATORS.register(
    "toyfaces-style-aniso",
    "toyfaces-style with an anisotropic w (no whitening output layer); same faces, true w axes known",
)
def toyfaces_style_aniso():
    from tlgan.toyfaces.style import ToyfacesStyle

    return ToyfacesStyle(whiten=False)


# ----------------------------------------------------------------------------------------
# Bundled encoders (for inversion): encoder.json + encoder.safetensors in a weights folder
# ----------------------------------------------------------------------------------------


def bundled_folder(name: str) -> Path | None:
    """The bundled weights folder of the registered generator ``name``, or None (not registered,
    or registered without bundled weights)."""
    from tlgan.models import list_models

    if name in list_models()["generators"] and (WEIGHTS / name).is_dir():
        return WEIGHTS / name
    return None


def _bundled_encoder_folders() -> list[tuple[Path, str | None]]:
    """(folder, stored generator fingerprint) for every bundled weights folder holding an encoder."""
    from tlgan.inversion.encoder import ENCODER_FILE
    from tlgan.io import read_json

    found = []
    for config_path in sorted(WEIGHTS.glob(f"*/{ENCODER_FILE}.json")):
        try:
            config = read_json(config_path)
        except TlganError as exc:
            log.warning("skipping %s (%s)", config_path, exc)
            continue
        found.append(
            (config_path.parent, config.get("generator_fingerprint") if isinstance(config, dict) else None)
        )
    return found


# The studio inverts one upload at a time; remember each generator's encoder (or its absence).
_ENCODERS: weakref.WeakKeyDictionary[Generator, torch.nn.Module | None] = weakref.WeakKeyDictionary()


def bundled_encoder(generator: Generator) -> torch.nn.Module | None:
    """The encoder shipped with ``generator``, or None; looked up once per generator object.

    First by the generator's registered name; failing that, any bundled encoder whose
    stored weights fingerprint matches this generator (its name may differ from the
    registered one, e.g. when it was loaded from its folder). An encoder that cannot be
    used logs a warning and counts as none.
    """
    if generator not in _ENCODERS:
        from tlgan.inversion.encoder import generator_fingerprint, load_encoder

        device = next(iter(generator.parameters()), torch.empty(0)).device
        encoder = None
        try:
            # By registered name only: a folder in the working directory that happens to share
            # the generator's name must not be picked up.
            encoder = load_encoder(generator.name, generator=generator, device=device, allow_path=False)
            if encoder is None:
                fingerprint = generator_fingerprint(generator)
                for directory, stored in _bundled_encoder_folders():
                    if stored == fingerprint:
                        encoder = load_encoder(directory, generator=generator, device=device)
                        break
        except TlganError as exc:
            log.warning(
                "no usable encoder for %r (%s); starting from random latents instead", generator.name, exc
            )
            encoder = None
        _ENCODERS[generator] = encoder
    return _ENCODERS[generator]
