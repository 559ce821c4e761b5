"""A request's view of the face: StyleGAN3's input transform (turn and move), per request.

StyleGAN3 draws its image from Fourier features whose grid can be turned and moved by a 3 x 3
matrix (NVlabs' ``synthesis.input.transform``). The studio's generator is shared by every
request, so a request's turn and move cannot be set on it for good: :func:`view_applied` sets
the matrix for one draw, under the caller's model lock, and puts the generator's own matrix
back afterwards. Images drawn under different views never share a batch or a remembered image
(the server keys both on :attr:`View.key`).

A view is given as ``rotate`` (degrees, counter-clockwise) and ``translate`` (x right, y down,
in input units where the image spans 1), exactly as ``tlgan edit --rotate/--translate`` take
them, and recorded in responses in the same form as ``tlgan edit`` records it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tlgan.errors import TlganError

ROTATE_LIMIT = 360.0
"""Largest |rotate| in degrees a request may send."""
TRANSLATE_LIMIT = 4.0
"""Largest |translate| per axis in input units (the image spans 1)."""


def transform_buffer(generator: Any) -> torch.Tensor | None:
    """The generator's input transform (3, 3) buffer, or None for a generator without one."""
    synthesis = getattr(generator, "synthesis", None)
    layer = getattr(synthesis, "input", None)
    buffer = getattr(layer, "transform", None)
    return buffer if isinstance(buffer, torch.Tensor) and tuple(buffer.shape) == (3, 3) else None


@dataclass(frozen=True)
class View:
    """A turn by ``rotate`` degrees and a move by ``translate`` (x, y) input units."""

    rotate: float = 0.0
    translate: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def parse(cls, rotate: float | None, translate: Sequence[float] | None) -> View | None:
        """The view a request asks for (None when it gives neither); TlganError for values out of range."""
        if rotate is None and translate is None:
            return None
        rotate = 0.0 if rotate is None else float(rotate)
        move = (0.0, 0.0) if translate is None else tuple(float(v) for v in translate)
        if len(move) != 2:
            raise TlganError(f"translate takes two numbers [x, y] (input units), not {list(move)}")
        if not math.isfinite(rotate) or abs(rotate) > ROTATE_LIMIT:
            raise TlganError(f"rotate is {rotate:g} degrees; give a finite angle within +-{ROTATE_LIMIT:g}")
        if not all(math.isfinite(v) and abs(v) <= TRANSLATE_LIMIT for v in move):
            raise TlganError(
                f"translate is {list(move)}; give finite moves within +-{TRANSLATE_LIMIT:g} input units "
                f"(the image spans 1, so 1/R is one pixel at resolution R)"
            )
        return cls(rotate, (move[0], move[1]))

    @property
    def matrix(self) -> torch.Tensor:
        """The 3 x 3 input transform (NVlabs' convention), as ``tlgan edit --rotate --translate`` builds it."""
        from tlgan.models.stylegan3 import input_transform

        return input_transform(self.rotate, self.translate)

    @property
    def key(self) -> bytes:
        """Bytes that tell views apart (for batches and remembered images)."""
        return np.array([self.rotate, *self.translate], dtype=np.float64).tobytes()

    def to_dict(self) -> dict[str, Any]:
        """{"rotate": degrees, "translate": [x, y]}: what ``tlgan edit`` records as ``input_transform``."""
        return {"rotate": self.rotate, "translate": [self.translate[0], self.translate[1]]}


def view_of(generator: Any) -> View | None:
    """The turn and move the generator's own transform makes (None without a transform, or when
    the matrix is not a turn and a move, such as a user's scaling matrix)."""
    buffer = transform_buffer(generator)
    if buffer is None:
        return None
    forward = np.linalg.inv(buffer.detach().double().cpu().numpy())
    c, s = forward[0, 0], forward[0, 1]
    if not np.allclose(forward[:2, :2], [[c, s], [-s, c]], atol=1e-5) or abs(c * c + s * s - 1) > 1e-5:
        return None
    rotate = round(math.degrees(math.atan2(s, c)), 6) + 0.0
    return View(rotate, (round(float(forward[0, 2]), 9) + 0.0, round(float(forward[1, 2]), 9) + 0.0))


def check_view(generator: Any, view: View | None, name: str) -> None:
    """TlganError when ``view`` is set and the generator ``name`` has no input transform."""
    if view is not None and transform_buffer(generator) is None:
        raise TlganError(
            f"rotate and translate turn and move StyleGAN3's input; generator {name!r} has no input "
            f"transform, so leave them out"
        )


@contextlib.contextmanager
def view_applied(generator: Any, view: View | None) -> Iterator[None]:
    """Draw with ``view``'s transform inside the block; the generator's own transform is back after it.

    Call it holding the lock that serialises the generator's use: the transform is the
    generator's state for as long as the block runs. ``view`` None changes nothing.
    """
    if view is None:
        yield
        return
    buffer = transform_buffer(generator)
    if buffer is None:
        raise TlganError("this generator has no input transform to turn or move")
    saved = buffer.detach().clone()
    with torch.no_grad():
        buffer.copy_(view.matrix.to(buffer.device, buffer.dtype))
    try:
        yield
    finally:
        with torch.no_grad():
            buffer.copy_(saved)
