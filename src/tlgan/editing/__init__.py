"""Editing latents along feature axes (moves, locks, straight walks)."""

from tlgan.editing.edit import edit_latents, interpolate

__all__ = ["edit_latents", "interpolate"]
