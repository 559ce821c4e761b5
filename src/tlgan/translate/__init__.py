"""Instant edits of real images: an image-to-image network trained on a generator's own edit pairs.

InterFaceGAN's second route. Train with :func:`train_translation` (``tlgan train translate``),
apply with :func:`translate` (``tlgan translate``): one forward pass, no inversion, and what the
generator cannot draw is kept.
"""

from tlgan.translate.model import TranslationModel, load_translation, translate
from tlgan.translate.network import TranslationNet, blend
from tlgan.translate.schedule import BlendSchedule, calibrate_translation
from tlgan.translate.train import edit_pairs, train_translation

__all__ = [
    "BlendSchedule",
    "TranslationModel",
    "TranslationNet",
    "blend",
    "calibrate_translation",
    "edit_pairs",
    "load_translation",
    "train_translation",
    "translate",
]
