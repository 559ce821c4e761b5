"""Editing latents along feature axes (moves, locks, straight walks), and holding attributes by
the classifier's readings while an edit that is not straight moves them."""

from tlgan.editing.edit import edit_latents, interpolate
from tlgan.editing.hold import hold_attributes

__all__ = ["edit_latents", "interpolate", "hold_attributes"]
