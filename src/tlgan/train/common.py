"""Pieces shared by the training loops: device checks, per-step randomness, LR schedule."""

from __future__ import annotations

import math
import shlex
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from tlgan.errors import TlganError

# Independent random streams of one training step (their numbers are part of the file format
# of reproducibility: changing them changes every trained model).
STREAM_LATENTS_D = 1
STREAM_LATENTS_G = 2
STREAM_BATCHNORM = 3
STREAM_MIXING_D = 4
STREAM_MIXING_G = 5
STREAM_PATH_LENGTH = 6
STREAM_SYNTHESIS_NOISE = 7

CHANNELS_LAST = torch.channels_last


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device, or a TlganError if it is malformed or not available here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise TlganError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TlganError(
                f"device {device!r} was asked for but CUDA is not available (torch {torch.__version__} "
                f"sees no GPU); use --device cpu, or install a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TlganError(
                f"device {device!r} does not exist: this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise TlganError(f"device {device!r} is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise TlganError(f"device type {dev.type!r} is not supported for training; use cpu or cuda")
    return dev


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A CPU torch.Generator that depends only on (seed, step, stream).

    Drawing each step's noise from its own generator makes a run resumed at step k draw
    exactly what an uninterrupted run draws, whatever happened before k.
    """
    state = np.random.SeedSequence([int(seed) % (2**63), int(stream), int(step)]).generate_state(
        2, dtype=np.uint32
    )
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def cosine_lr(step: int, steps: int, base_lr: float, warmup: int = 0, final_fraction: float = 0.0) -> float:
    """Learning rate at ``step`` (0-based): linear warm-up over ``warmup`` steps, then a
    half cosine from ``base_lr`` down to ``final_fraction * base_lr`` at ``steps``."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, steps - warmup)
    t = min(1.0, (step - warmup) / span)
    return base_lr * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * t)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def command_line() -> str:
    """The command that started this process, shell-quoted (``tlgan ...`` for the CLI)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("/tlgan", "\\tlgan", "tlgan.exe")):
        argv[0] = "tlgan"
    return shlex.join(argv)


def settings_mismatch(
    saved: Mapping[str, Any], current: Mapping[str, Any], introduced: Mapping[str, Any] | None = None
) -> list[str]:
    """Names and values of settings that differ between a checkpoint and the current call.

    ``introduced`` maps settings that newer versions record to the value a checkpoint without
    them was trained with, so such a checkpoint still resumes when the call uses that value.
    """
    saved = {**(introduced or {}), **saved}
    out = []
    for key in sorted(set(saved) | set(current)):
        if saved.get(key) != current.get(key):
            out.append(f"{key}: checkpoint {saved.get(key)!r}, now {current.get(key)!r}")
    return out
