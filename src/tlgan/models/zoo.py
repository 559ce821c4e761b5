"""The built-in models: the toyfaces renderer, and the bundled networks trained by tlgan's own
commands on the toyfaces world, shipped as safetensors + JSON under ``tlgan/models/weights/``
and loaded without any download."""

from __future__ import annotations

from pathlib import Path

from tlgan.errors import TlganError
from tlgan.models import CLASSIFIERS, GENERATORS

WEIGHTS = Path(__file__).parent / "weights"


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
