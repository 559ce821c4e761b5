"""Learned edits (:mod:`tlgan.delta`) as rows of the studio, beside the classifier axes.

Each learned edit is a :class:`~tlgan.delta.model.DeltaModel` under a row name (its
``factor``, e.g. "yaw", or its folder's name). A request moves it by the amount under that
name in ``amounts``: the alpha of :func:`tlgan.delta.edit.delta_edit`, in training steps of
change. The learned edits apply after the linear axis moves, one after another in the order
they were given at start-up, each to the latent the previous one made::

    latent = base + sum_a amount_a * u_a                      (axes, with locks)
    for each learned edit k, in order:  latent = delta_edit(latent, model_k, alpha_k)

A learned row cannot be locked: an edit whose move depends on the latent has no fixed
direction to hold.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from tlgan.errors import TlganError
from tlgan.models.base import Generator

if TYPE_CHECKING:
    from tlgan.delta.model import DeltaModel

log = logging.getLogger(__name__)


def row_name(model: DeltaModel, path: str | os.PathLike | None = None) -> str:
    """The studio row of a learned edit: its ``factor``, else its folder's name."""
    factor = getattr(model, "factor", None)
    if factor:
        return str(factor)
    if path is not None:
        folder = Path(path)
        return (folder.parent if folder.suffix == ".json" else folder).name
    raise TlganError("a learned edit without a factor name needs a name; pass it as {name: model}")


def load_learned_edits(paths: Sequence[str | os.PathLike], device: str = "cpu") -> dict[str, DeltaModel]:
    """{row name: DeltaModel} for folders written by ``tlgan delta train``, in the order given."""
    from tlgan.delta import load_delta

    edits: dict[str, DeltaModel] = {}
    for path in paths:
        model = load_delta(path, device=device)
        name = row_name(model, path)
        if name in edits:
            raise TlganError(
                f"two learned edits are both named {name!r} ({path} and an earlier --delta); give "
                f"each factor once, or rename a model's folder"
            )
        edits[name] = model
    return edits


def check_learned_edits(
    edits: Mapping[str, DeltaModel],
    generator: Generator,
    space: str,
    latent_shape: tuple[int, ...],
    taken: Iterable[str],
    generator_spec: str | None = None,
) -> None:
    """Every learned edit must work in the studio's space, on its latent shape, for this generator,
    and its row name must not be an axis' name. Raises TlganError naming the model and the fix."""
    taken = set(taken)
    names = {generator.name, generator_spec} - {None}
    for name, model in edits.items():
        if name in taken:
            raise TlganError(
                f"learned edit {name!r} has the name of an attribute axis; rename the model's folder "
                f"(the row is named after the folder when the model has no factor name)"
            )
        if model.space != space:
            raise TlganError(
                f"learned edit {name!r} works in space {model.space!r} but the studio edits {space!r} "
                f"faces; serve with --space {model.space}, or train the edit in {space!r} "
                f"(`tlgan delta train --space {space}`)"
            )
        if tuple(model.latent_shape) != tuple(latent_shape):
            raise TlganError(
                f"learned edit {name!r} takes latents of shape {tuple(model.latent_shape)}, but "
                f"generator {generator_spec or generator.name!r} has {tuple(latent_shape)} in "
                f"{space!r}; train it for this generator"
            )
        trained_for = model.info.get("generator")
        if trained_for not in (None, "unknown") and trained_for not in names:
            raise TlganError(
                f"learned edit {name!r} was trained for generator {trained_for!r}, not "
                f"{generator_spec or generator.name!r}; train it for this generator "
                f"(`tlgan delta train --generator ...`)"
            )


def apply_learned(
    latent: torch.Tensor, edits: Mapping[str, DeltaModel], alphas: Mapping[str, float]
) -> torch.Tensor:
    """``latent`` (one latent) moved by each learned edit with a non-zero alpha, in the order of ``edits``."""
    from tlgan.delta import delta_edit

    for name, model in edits.items():
        alpha = alphas.get(name, 0.0)
        if alpha != 0.0:
            latent = delta_edit(latent, model, alpha)
    return latent
