"""A calibrated blend schedule: which weight blend gives which fraction of the edit.

Blending the identity and edited networks' weights, ``(1 - a) * identity + a * edited``, is
the paper's continuous control, but the image does not move in proportion to ``a``: on the
toyfaces models a blend of 0.5 draws almost none of the edit and nearly all of it appears
between 0.75 and 1. The schedule measures the *edit progress* of each blend on a fixed set of
images,

    p(a) = sum_i <E_a(x_i) - I(x_i), E_1(x_i) - I(x_i)> / sum_i ||E_1(x_i) - I(x_i)||^2,

(``I`` the identity network, ``E_a`` the blend at ``a``: the share of the full edit's pixel
change that the blend draws, projected on it), makes it monotone, and inverts it: an amount
that asks for a fraction ``t`` of the trained edit is applied at the blend ``a = p^-1(t)``, by
linear interpolation in the table. ``t = 0`` and ``t = 1`` map to ``a = 0`` and ``a = 1``
exactly; outside [0, 1] the blend stays linear (``a = t``), as without a schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tlgan.errors import TlganError

#: Of the monotone progress, this share is replaced by ``a`` itself, so that the table is
#: strictly increasing (a flat stretch would make its inverse ambiguous) and still ends at 0 and 1.
STRICT_MIX = 1e-3


@dataclass(frozen=True)
class BlendSchedule:
    """The blend ``a`` at which a model draws each fraction of its edit.

    ``blend`` (K,) is the grid of weight blends measured, from 0 to 1; ``progress`` (K,) the
    monotone, strictly increasing edit progress at each, from 0 to 1; ``raw_progress`` (K,)
    the measured values before they were made monotone; ``info`` says on what they were measured.
    """

    blend: tuple[float, ...]
    progress: tuple[float, ...]
    raw_progress: tuple[float, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        b, p = np.asarray(self.blend, dtype=np.float64), np.asarray(self.progress, dtype=np.float64)
        if b.ndim != 1 or b.shape != p.shape or len(b) < 2:
            raise TlganError(
                f"a blend schedule needs two equal lists of at least 2 numbers; got {b.shape} and {p.shape}; "
                f"calibrate the model again (`tlgan train calibrate-translate`)"
            )
        if not (np.isfinite(b).all() and np.isfinite(p).all()):
            raise TlganError("the blend schedule holds non-finite numbers; calibrate the model again")
        if b[0] != 0 or b[-1] != 1 or p[0] != 0 or p[-1] != 1:
            raise TlganError(
                "a blend schedule must run from blend 0 at progress 0 to blend 1 at progress 1; "
                "calibrate the model again"
            )
        if (np.diff(b) <= 0).any() or (np.diff(p) <= 0).any():
            raise TlganError("the blend schedule is not strictly increasing; calibrate the model again")

    def blend_at(self, fraction: float) -> float:
        """The weight blend ``a`` that draws ``fraction`` of the edit (0 -> 0 and 1 -> 1 exactly).

        Outside [0, 1] the blend is the fraction itself (linear extrapolation of the weights).
        """
        t = float(fraction)
        if t <= 0.0 or t >= 1.0:
            return t
        return float(np.interp(t, self.progress, self.blend))

    def to_dict(self) -> dict[str, Any]:
        return {
            "blend": [float(x) for x in self.blend],
            "progress": [float(x) for x in self.progress],
            "raw_progress": [float(x) for x in self.raw_progress],
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, data: Any) -> BlendSchedule:
        if not isinstance(data, dict) or "blend" not in data or "progress" not in data:
            raise TlganError(
                "the blend schedule in translation.json is malformed (needs 'blend' and 'progress'); "
                "calibrate the model again (`tlgan train calibrate-translate`)"
            )
        return cls(
            tuple(float(x) for x in data["blend"]),
            tuple(float(x) for x in data["progress"]),
            tuple(float(x) for x in data.get("raw_progress", ())),
            dict(data.get("info", {})),
        )


def monotone_progress(blend: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """``raw`` progress (K,) made a strictly increasing table from 0 (at ``blend`` 0) to 1 (at 1).

    Clipped to [0, 1], pinned to 0 and 1 at the ends (their exact values by definition),
    made non-decreasing by a running maximum, then mixed with ``blend`` by :data:`STRICT_MIX`
    so that no stretch is flat.
    """
    p = np.clip(np.asarray(raw, dtype=np.float64), 0.0, 1.0)
    p[0], p[-1] = 0.0, 1.0
    p = np.maximum.accumulate(p)
    out = (1.0 - STRICT_MIX) * p + STRICT_MIX * np.asarray(blend, dtype=np.float64)
    out[0], out[-1] = 0.0, 1.0
    return out


def edit_progress(
    forward: Callable[[float, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    blends: np.ndarray,
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """(K,) edit progress p(a) of ``forward(a, images)`` at each blend of ``blends`` (see the module).

    ``forward(a, x)`` gives the images (N, 3, R, R) of blend ``a``; ``images`` (N, 3, R, R) in
    [-1, 1]. Raises :class:`TlganError` if the full edit changes nothing (p is then undefined).
    """
    with torch.no_grad():
        chunks = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        start = [forward(0.0, x) for x in chunks]
        full = [forward(1.0, x) - s for x, s in zip(chunks, start, strict=True)]
        norm = sum(float(d.double().pow(2).sum()) for d in full)
        if not norm > 0:
            raise TlganError(
                "the edited network draws exactly the identity's images: there is no edit to calibrate"
            )
        out = []
        for a in tqdm(list(blends), desc="calibrating blends", disable=not progress):
            dot = 0.0
            for x, s, d in zip(chunks, start, full, strict=True):
                dot += float(((forward(float(a), x) - s).double() * d.double()).sum())
            out.append(dot / norm)
    return np.asarray(out, dtype=np.float64)


def calibrate_schedule(
    forward: Callable[[float, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    points: int = 33,
    info: dict[str, Any] | None = None,
    progress: bool = False,
) -> BlendSchedule:
    """The :class:`BlendSchedule` of ``forward`` measured on ``images`` at ``points`` blends in [0, 1].

    ``points`` >= 3 evenly spaced blends (0 and 1 included); ``info`` is stored with the table.
    """
    if int(points) < 3:
        raise TlganError(f"a blend schedule needs at least 3 points, not {points}")
    blends = np.linspace(0.0, 1.0, int(points))
    raw = edit_progress(forward, images, blends, progress=progress)
    table = monotone_progress(blends, raw)
    return BlendSchedule(
        tuple(float(x) for x in blends),
        tuple(float(x) for x in table),
        tuple(round(float(x), 6) for x in raw),
        {**(info or {}), "images": int(len(images)), "points": int(points)},
    )


def calibrate_translation(
    model, images: torch.Tensor, *, points: int = 33, progress: bool = False, info=None
):
    """``model`` (a :class:`~tlgan.translate.model.TranslationModel`) with its weight blend calibrated.

    ``images`` (N, 3, R, R) in [-1, 1] at the model's resolution: the generator's own images
    (:func:`tlgan.translate.train.calibration_set`). Sets and returns ``model.schedule``
    after measuring the edit progress of ``points`` weight blends on them.
    """
    from tlgan.translate.network import apply_blend

    if images.ndim != 4 or images.shape[1:] != (3, model.resolution, model.resolution):
        raise TlganError(
            f"calibration images must be (N, 3, {model.resolution}, {model.resolution}); got {tuple(images.shape)}"
        )
    device = next(model.identity.parameters()).device

    def forward(a: float, x: torch.Tensor) -> torch.Tensor:
        return apply_blend(model.identity, model.edited, a, x.to(device=device, dtype=torch.float32))

    model.schedule = calibrate_schedule(forward, images, points=points, info=info, progress=progress)
    return model.schedule
