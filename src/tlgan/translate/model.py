"""A trained translation model: the identity and edited networks and what they were made from.

A model folder holds

- ``translation.json``: the format, the networks' constructor arguments, and the record of
  the training: generator spec, axes file, attribute, the amount the pairs were moved by,
  locks, space and the training settings; and, once calibrated, ``blend_schedule`` (a
  :class:`~tlgan.translate.schedule.BlendSchedule`);
- ``model.safetensors``: both networks' weights, as ``identity.<key>`` and ``edited.<key>``.

:func:`translate` applies a model to images at any amount (in the attribute's latent units,
like an edit's amount), asking for the fraction ``t = amount / trained amount`` of the edit.
By default it mixes the two networks' images, ``(1 - t) * I(x) + t * E(x)`` (two forward
passes between the ends, one at either end): on the toyfaces models the classifier's score
then rises along the amount for more faces than with any weight blend. ``blend="weights"``
is the paper's interpolation of the networks' weights, one forward pass: at ``a = t`` for a
folder without a schedule (as the first models were written and applied), at the calibrated
``a = p^-1(t)`` for one with it, so that equal steps of the amount draw equal shares of the edit.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tlgan.errors import TlganError, finite_number
from tlgan.io import load_state_dict, load_tensors, read_json, save_tensors, write_json
from tlgan.translate.network import TranslationNet, apply_blend
from tlgan.translate.schedule import BlendSchedule

log = logging.getLogger(__name__)

FORMAT = "tlgan.translation/1"
CONFIG_FILE = "translation.json"
WEIGHTS_FILE = "model.safetensors"
SCHEDULE_KEY = "blend_schedule"
BLENDS = ("weights", "outputs")
_OWN_KEYS = ("format", "kwargs", "attribute", "amount", SCHEDULE_KEY)


@dataclass
class TranslationModel:
    """The two networks of one attribute's translation and their provenance.

    ``amount`` is the latent distance the training pairs were moved along the attribute's axis;
    ``record`` holds generator, axes, attribute, locks, space and settings as written to JSON;
    ``schedule`` the calibrated weight blend (None: the blend is linear in the amount).
    """

    identity: TranslationNet
    edited: TranslationNet
    attribute: str
    amount: float
    record: dict[str, Any] = field(default_factory=dict)
    schedule: BlendSchedule | None = None

    @property
    def resolution(self) -> int:
        return self.identity.resolution

    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        tensors = {f"identity.{k}": v for k, v in self.identity.state_dict().items()}
        tensors.update({f"edited.{k}": v for k, v in self.edited.state_dict().items()})
        config = {
            "format": FORMAT,
            "kwargs": dict(self.identity.config_kwargs),
            "attribute": self.attribute,
            "amount": float(self.amount),
            **{k: v for k, v in self.record.items() if k not in _OWN_KEYS},
        }
        if self.schedule is not None:
            config[SCHEDULE_KEY] = self.schedule.to_dict()
        save_tensors(directory / WEIGHTS_FILE, tensors, {"config": config})
        write_json(directory / CONFIG_FILE, config)
        return directory

    def to(self, device: str | torch.device) -> TranslationModel:
        self.identity.to(device)
        self.edited.to(device)
        return self


def load_translation(directory: str | os.PathLike, device: str = "cpu") -> TranslationModel:
    """A model folder written by ``tlgan train translate`` (weights loaded strictly, no code run)."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        hint = " (it is a generator or classifier folder)" if (directory / "model.json").is_file() else ""
        raise TlganError(
            f"{directory}: not a translation model folder, {CONFIG_FILE} is missing{hint}; "
            f"make one with `tlgan train translate`"
        )
    config = read_json(config_path)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise TlganError(
            f"{config_path}: format {config.get('format') if isinstance(config, dict) else None!r} is not "
            f"{FORMAT!r}; retrain it with `tlgan train translate`"
        )
    try:
        identity = TranslationNet(**config["kwargs"])
        edited = TranslationNet(**config["kwargs"])
        attribute, amount = str(config["attribute"]), float(config["amount"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TlganError(f"{config_path}: incomplete or malformed ({exc}); retrain the model") from None
    tensors, _ = load_tensors(directory / WEIGHTS_FILE)
    for prefix, net in (("identity.", identity), ("edited.", edited)):
        part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        load_state_dict(net, part, f"{directory / WEIGHTS_FILE}: {prefix[:-1]} network")
    extra = set(tensors) - {k for k in tensors if k.startswith(("identity.", "edited."))}
    if extra:
        raise TlganError(f"{directory / WEIGHTS_FILE}: unexpected tensors {sorted(extra)[:3]}")
    record = {k: v for k, v in config.items() if k not in _OWN_KEYS}
    schedule = None
    if config.get(SCHEDULE_KEY) is not None:
        try:
            schedule = BlendSchedule.from_dict(config[SCHEDULE_KEY])
        except TlganError as exc:
            raise TlganError(f"{config_path}: {exc}") from None
    model = TranslationModel(identity.eval(), edited.eval(), attribute, amount, record, schedule)
    return model.to(device)


def blend_for(model: TranslationModel, amount: float) -> float:
    """The weight blend ``a`` at which ``model`` applies ``amount`` (latent units).

    ``t = amount / model.amount``; without a schedule ``a = t``, with one ``a = p^-1(t)``
    (0 -> 0 and the trained amount -> 1 exactly; outside [0, trained] ``a = t``).
    """
    t = amount / model.amount
    return t if model.schedule is None else model.schedule.blend_at(t)


def translate(
    images: torch.Tensor,
    model: TranslationModel | str | os.PathLike,
    amount: float,
    batch_size: int = 64,
    blend: str = "outputs",
) -> torch.Tensor:
    """``images`` (N, 3, R, R) in [-1, 1] translated by ``amount`` of the model's attribute.

    ``amount`` is in the latent units of the edit the model was trained on (``trained`` =
    ``model.amount``); it asks for the fraction ``t = amount / trained`` of the edit. With
    ``blend="outputs"`` (the default) the networks' images are mixed, ``(1 - t) * I(x) + t * E(x)``;
    with ``blend="weights"`` (the paper's) their weights are blended at :func:`blend_for` (``t``
    itself, or the calibrated blend of a model with a schedule). Either way 0 gives
    the identity network's output and ``trained`` the edited network's, exactly. Amounts outside
    [0, trained] extrapolate (logged: the model never saw such pairs). Images must have the
    model's resolution; align and resize photos first. Raises :class:`TlganError` on bad input.
    """
    if not isinstance(model, TranslationModel):
        model = load_translation(model)
    amount = finite_number(amount, "amount", "latent units")
    if blend not in BLENDS:
        raise TlganError(f"blend must be one of {', '.join(BLENDS)}, not {blend!r}")
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise TlganError(
            f"images must be a (N, 3, H, W) tensor in [-1, 1]; got "
            f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}"
        )
    if images.shape[-2:] != (model.resolution, model.resolution):
        raise TlganError(
            f"this translation model works at {model.resolution} x {model.resolution} px (its generator's "
            f"resolution); the images are {images.shape[-1]} x {images.shape[-2]}: align or resize them "
            f"to {model.resolution} px first (tlgan translate does this for photos)"
        )
    t = amount / model.amount
    if t < 0 or t > 1:
        log.warning(
            "amount %g is outside the trained range [0, %g] of %s: extrapolating the %s linearly",
            amount,
            model.amount,
            model.attribute,
            blend,
        )
    a = blend_for(model, amount)
    device = next(model.identity.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(device=device, dtype=torch.float32)
            if blend == "weights":
                out.append(apply_blend(model.identity, model.edited, a, chunk).cpu())
            elif t == 0.0:
                out.append(model.identity(chunk).cpu())
            elif t == 1.0:
                out.append(model.edited(chunk).cpu())
            else:
                out.append(torch.lerp(model.identity(chunk), model.edited(chunk), t).cpu())
    return torch.cat(out) if out else images.new_zeros((0, *images.shape[1:]))
