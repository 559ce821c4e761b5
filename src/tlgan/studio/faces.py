"""What a studio request means: its face, its moves and its locks, as the latent to draw.

A request names a face by ``seed`` or by ``latent``, moves it by ``amounts`` (one per row:
attribute axes, then learned edits) and holds the ``locks`` fixed. :class:`Faces` turns that
into latents and nothing else: no models run here, nothing is locked or scheduled, so every
rule of the arithmetic can be checked without a server::

    base    = the seed's latent, or the sent latent (latent_shape, checked)
    edited  = base + sum_a amount_a * u_a               (axis rows; on ``layers`` only, for wp)
    for each learned edit k, in order:  edited = delta_edit(edited, model_k, amount_k)

``u_a`` is axis a made orthogonal to every locked axis other than a (and of unit length), as
:func:`tlgan.editing.edit.edit_latents` makes it; a wp face moves by the same w step in every
layer unless ``layers`` names some. The model server (:mod:`tlgan.studio.server`) draws what
comes out; the routes (:mod:`tlgan.studio.app`) read the requests.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tlgan.axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.registry import unknown_name_message
from tlgan.studio.learned import apply_learned
from tlgan.studio.schema import AMOUNT_LIMIT, MAX_SEED

if TYPE_CHECKING:
    from tlgan.delta.model import DeltaModel

LATENT_LIMIT = 100.0
"""Largest |value| accepted in a latent. Latents are standard normal; beyond this they are garbage."""


def check_spaces(axes_space: str, space: str) -> None:
    """TlganError unless axes fitted in ``axes_space`` can move faces of ``space`` (the same space,
    or w axes for wp faces)."""
    if space != axes_space and not (space == "wp" and axes_space == "w"):
        raise TlganError(
            f"axes fitted in {axes_space!r} cannot edit faces in {space!r}; fit axes in "
            f"{'w' if space == 'wp' else space!r} or serve the studio in {axes_space!r}"
        )


class Faces:
    """The faces of one studio: latents of ``latent_shape`` in ``space``, moved along ``axes``
    and by the ``learned`` edits (row name -> DeltaModel, in the order they apply).

    ``seed_latent(seed)`` gives the unedited latent of a face number (the server passes the
    generator's counter-based sampler, remembered). ``space`` defaults to the axes' space; wp
    faces (latents (num_ws, w_dim)) take w axes. Every check raises :class:`TlganError` with a
    message for the user; ``generator_name`` names the generator in them.
    """

    def __init__(
        self,
        axes: FeatureAxes,
        latent_shape: Sequence[int],
        seed_latent: Callable[[int], torch.Tensor],
        *,
        space: str | None = None,
        learned: Mapping[str, DeltaModel] | None = None,
        amount_limit: float = AMOUNT_LIMIT,
        generator_name: str = "generator",
    ):
        space = axes.space if space is None else str(space)
        check_spaces(axes.space, space)
        self.axes = axes
        self.space = space
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.latent_dim = int(np.prod(self.latent_shape))  # numbers in one latent
        self.seed_latent = seed_latent
        self.learned = dict(learned or {})  # in the order they apply
        self.amount_limit = float(amount_limit)
        self.generator_name = generator_name
        # A click moves the same few rows under the same locks again and again: keep each unit
        # move instead of redoing the locked-span decomposition.
        self._direction = functools.lru_cache(maxsize=4096)(self._unit_move)

    # -- the face ----------------------------------------------------------------------------

    def shape_text(self) -> str:
        """The latent shape a request must send, in words (for error messages)."""
        if len(self.latent_shape) == 1:
            return f"{self.latent_dim} numbers"
        rows, width = self.latent_shape
        return (
            f"{rows} x {width} numbers (num_ws x w_dim: {rows} lists of {width}, or one flat list of "
            f"{self.latent_dim})"
        )

    def base_latent(self, seed: int | None = None, latent: Sequence[Any] | None = None) -> torch.Tensor:
        """The face's unedited latent (``latent_shape``), from exactly one of ``seed`` or ``latent``.

        ``latent`` may be flat (``latent_dim`` numbers) or nested in the latent's shape; it must
        be finite and within +-LATENT_LIMIT. A seed's latent is a fresh copy each time.
        """
        if (seed is None) == (latent is None):
            raise TlganError(
                "give exactly one of `seed` (a face number, e.g. 7) or `latent` (a list of "
                f"{self.shape_text()})" + ("; you gave both" if seed is not None else "")
            )
        if seed is not None:
            if not 0 <= int(seed) <= MAX_SEED:
                raise TlganError(f"seed {seed} is out of range; use 0..{MAX_SEED}")
            return self.seed_latent(int(seed)).clone()
        try:
            array = np.asarray(latent, dtype=np.float32)
        except (TypeError, ValueError):
            raise TlganError(
                f"latent is not a regular list of numbers (rows of different lengths?); generator "
                f"{self.generator_name!r} needs {self.shape_text()} (space {self.space!r})"
            ) from None
        if not (array.shape == self.latent_shape or (array.ndim == 1 and array.size == self.latent_dim)):
            got = f"{array.size} numbers" if array.ndim == 1 else f"shape {list(array.shape)}"
            need = (
                f"{self.latent_dim} (space {self.space!r})"
                if len(self.latent_shape) == 1
                else f"{self.shape_text()} (space {self.space!r}, shape {list(self.latent_shape)})"
            )
            raise TlganError(
                f"latent has {got} but generator {self.generator_name!r} needs {need}; send the "
                f"`latent` a previous response gave"
            )
        values = torch.from_numpy(np.ascontiguousarray(array).reshape(-1))
        bad = ~torch.isfinite(values)
        if bad.any():
            where = torch.nonzero(bad).flatten()[:5].tolist()
            raise TlganError(
                f"latent holds {int(bad.sum())} NaN or infinite value(s) (first at index {where}); "
                f"every entry must be a finite number"
            )
        big = values.abs() > LATENT_LIMIT
        if big.any():
            i = int(torch.nonzero(big).flatten()[0])
            raise TlganError(
                f"latent entry {i} is {float(values[i]):g}; latents are standard normal, so entries "
                f"beyond +-{LATENT_LIMIT:g} are not plausible faces"
            )
        return values.reshape(self.latent_shape)

    def check_row(self, row: torch.Tensor) -> torch.Tensor:
        """One latent (``latent_shape``) to draw, as it is; TlganError for another shape or non-finite values."""
        if not isinstance(row, torch.Tensor) or tuple(row.shape) != self.latent_shape:
            shape = tuple(row.shape) if isinstance(row, torch.Tensor) else type(row).__name__
            raise TlganError(
                f"a latent for generator {self.generator_name!r} must have shape {self.latent_shape} "
                f"(space {self.space!r}), not {shape}"
            )
        if not bool(torch.isfinite(row).all()):
            raise TlganError("latent holds NaN or infinite values; every entry must be a finite number")
        return row

    # -- the moves ---------------------------------------------------------------------------

    @property
    def row_names(self) -> list[str]:
        """Every name ``amounts`` takes: the axes' attributes, then the learned edits."""
        return list(self.axes.attributes) + list(self.learned)

    def check_moves(
        self, amounts: Mapping[str, float], locks: Sequence[str]
    ) -> tuple[dict[str, float], list[str]]:
        """Known row names (axes and learned edits) and finite amounts within the limit; returns cleaned
        copies: the non-zero amounts as floats, and the locks once each, in their first order."""
        clean: dict[str, float] = {}
        for name, amount in amounts.items():
            if name not in self.learned and name not in self.axes.attributes:
                raise TlganError(unknown_name_message("attribute", name, self.row_names))
            amount = float(amount)
            if not math.isfinite(amount):
                raise TlganError(f"amount for {name!r} is {amount}; amounts must be finite numbers")
            if abs(amount) > self.amount_limit:
                raise TlganError(
                    f"amount for {name!r} is {amount:g}, outside the allowed range "
                    f"[{-self.amount_limit:g}, {self.amount_limit:g}]; use a smaller move"
                )
            if amount != 0.0:
                clean[name] = amount
        for name in locks:
            if name in self.learned:
                raise TlganError(
                    f"in locks: {name!r} is a learned edit, which cannot be locked (its move depends on "
                    f"the face, so there is no fixed direction to hold); lock attribute axes only"
                )
            try:
                self.axes.index(name)
            except TlganError as exc:
                raise TlganError(f"in locks: {exc}") from None
        return clean, list(dict.fromkeys(locks))

    def edit(
        self,
        base: torch.Tensor,
        amounts: Mapping[str, float],
        locks: Sequence[str],
        layers: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """``base`` (``latent_shape``) moved by ``amounts`` with ``locks`` held fixed: what
        tlgan.editing.edit_latents gives (for wp, the same w move in every layer, or in ``layers`` only).

        Takes what :meth:`check_moves` returned. The edit is base + sum_a amount_a * u_a, linear
        in the amounts, where u_a depends only on a and the other locks. Each u_a comes from
        edit_latents itself (a unit move from the origin) and is kept, so a click does not redo
        the locked-span decomposition for every move; the sum is formed in float64 as
        edit_latents forms it.

        Amounts of learned edits then apply, in their order (see :mod:`tlgan.studio.learned`),
        to the latent the axis moves made (to every layer: ``layers`` limits the axis moves only).
        TlganError for ``layers`` of a face that is not wp, or outside the latent.
        """
        linear = {name: amount for name, amount in amounts.items() if name not in self.learned}
        rows = self._layer_rows(layers)
        if not linear:
            edited = base.clone()
        else:
            delta = torch.zeros(self.axes.dim, dtype=torch.float64)
            for name, amount in linear.items():
                others = tuple(sorted(set(locks) - {name}))
                delta += amount * self._direction(name, others)
            if rows is None:
                edited = base + delta.to(base.dtype)
            else:
                edited = base.clone()
                edited[rows] = base[rows] + delta.to(base.dtype)
        if self.learned and len(linear) < len(amounts):
            edited = apply_learned(edited, self.learned, amounts)
        return edited

    def resolve(
        self,
        seed: int | None = None,
        latent: Sequence[Any] | None = None,
        amounts: Mapping[str, float] | None = None,
        locks: Sequence[str] = (),
        layers: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(edited, base) latents (``latent_shape`` each) of a request: :meth:`base_latent`, checked
        by :meth:`check_moves`, moved by :meth:`edit`."""
        base = self.base_latent(seed, latent)
        clean, locks = self.check_moves(amounts or {}, locks)
        return self.edit(base, clean, locks, layers), base

    def _layer_rows(self, layers: Sequence[int] | None) -> list[int] | None:
        """The wp rows ``layers`` names (None: every row), checked against the latent."""
        if layers is None:
            return None
        if self.space != "wp" or self.axes.space != "w":
            raise TlganError(
                f"layers apply to wp faces moved along w axes; this studio edits {self.space!r} faces"
            )
        num_ws = self.latent_shape[0]
        rows = [int(k) for k in layers]
        bad = [k for k in rows if not 0 <= k < num_ws]
        if bad:
            raise TlganError(f"layer(s) {bad} are outside this wp latent, which has layers 0-{num_ws - 1}")
        return rows

    def _unit_move(self, name: str, locks: tuple[str, ...]) -> torch.Tensor:
        from tlgan.editing.edit import edit_latents

        origin = torch.zeros(self.axes.dim, dtype=torch.float64)
        return edit_latents(origin, self.axes, {name: 1.0}, list(locks))
