"""Inversion: from an image (a photo, a render) to a latent the generator turns back into it.

``encoder`` holds the CNN that guesses a latent in one pass (trained by
:func:`tlgan.train.train_encoder`);
``optimize`` refines guesses by gradient descent on the latent (``invert`` does both;
``invert_image`` is the studio's one-upload entry point); ``evaluate`` measures both on
the toyfaces world.
"""

from tlgan.inversion.encoder import LatentEncoder, load_encoder, save_encoder
from tlgan.inversion.optimize import InversionResult, invert, invert_image, optimize_latents

__all__ = [
    "LatentEncoder",
    "load_encoder",
    "save_encoder",
    "InversionResult",
    "invert",
    "invert_image",
    "optimize_latents",
]
