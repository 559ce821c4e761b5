"""Training checkpoints without pickles: one safetensors file plus a JSON manifest.

A checkpoint folder (``OUT/checkpoint/``) holds

- ``state.safetensors``: every tensor, under flat names: ``module.<name>.<state key>`` for
  networks (weights and buffers), ``optim.<name>.<param index>.<key>`` for optimizer state
  (Adam's moments and step counts), ``rng.torch`` (and ``rng.cuda.<i>``) for the global
  random generators. Its metadata carries the manifest, so tensors and manifest are
  replaced together in one atomic rename.
- ``manifest.json``: a readable copy of that manifest: format, step, the optimizers'
  param-group settings and non-tensor state, and the trainer's own ``info`` (settings,
  running averages).

Loading checks that every module and optimizer matches what was saved and says what
differs; nothing is unpickled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tlgan.errors import TlganError
from tlgan.io import json_safe, load_tensors, save_tensors, write_json

FORMAT = "tlgan.checkpoint/1"
CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.safetensors"
MANIFEST_FILE = "manifest.json"


def checkpoint_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / CHECKPOINT_DIR


def has_checkpoint(out_dir: str | os.PathLike) -> bool:
    """Whether ``out_dir`` holds a checkpoint (``OUT/checkpoint/state.safetensors``)."""
    return (checkpoint_dir(out_dir) / STATE_FILE).is_file()


def save_checkpoint(
    out_dir: str | os.PathLike,
    *,
    step: int,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    info: dict[str, Any] | None = None,
) -> Path:
    """Write the full training state after ``step`` completed steps to ``OUT/checkpoint/``."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = value
    optim_manifest = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, state in sd["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{name}.{idx}.{key}"] = value
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        optim_manifest[name] = {
            "param_groups": json_safe(sd["param_groups"]),
            "scalars": json_safe(scalars),
            "n_state": len(sd["state"]),
        }
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    manifest = {
        "format": FORMAT,
        "step": int(step),
        "modules": list(modules),
        "optimizers": optim_manifest,
        "info": json_safe(info or {}),
    }
    directory = checkpoint_dir(out_dir)
    save_tensors(directory / STATE_FILE, tensors, manifest)
    write_json(directory / MANIFEST_FILE, manifest)
    return directory


def _load_module(name: str, module: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    prefix = f"module.{name}."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"{wrong[0]!r} has shape {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}"
        )
        raise TlganError(
            f"{path}: the saved {name!r} network does not match this one ({detail}); the checkpoint was "
            f"written with other settings: pass the same ones, or start in a new --out folder"
        )
    module.load_state_dict(state, strict=True)


def _load_optimizer(
    name: str, opt: torch.optim.Optimizer, entry: dict[str, Any], tensors: dict[str, torch.Tensor], path: Path
) -> None:
    groups = entry["param_groups"]
    own_groups = opt.state_dict()["param_groups"]
    if len(groups) != len(own_groups) or any(
        len(g["params"]) != len(o["params"]) for g, o in zip(groups, own_groups, strict=True)
    ):
        raise TlganError(
            f"{path}: the saved {name!r} optimizer has other parameter groups than this one; "
            f"the checkpoint was written with other settings"
        )
    # JSON turned tuples (Adam's betas) into lists; give the optimizer back the types it wrote.
    restored_groups = []
    for group, own in zip(groups, own_groups, strict=True):
        restored_groups.append(
            {k: (tuple(v) if isinstance(own.get(k), tuple) else v) for k, v in group.items()}
        )
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim.{name}."
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, field = key[len(prefix) :].split(".", 1)
            state.setdefault(int(idx), {})[field] = value
    for idx, fields in entry.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(fields)
    if len(state) != entry.get("n_state", len(state)):
        raise TlganError(f"{path}: optimizer {name!r} state is incomplete; the checkpoint is corrupt")
    opt.load_state_dict({"state": state, "param_groups": restored_groups})


def restore_checkpoint(
    out_dir: str | os.PathLike,
    *,
    modules: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer],
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load ``OUT/checkpoint/`` into ``modules`` and ``optimizers`` in place; returns the manifest
    (``step``, ``info``). Also restores the global torch random state unless ``restore_rng`` is false."""
    path = checkpoint_dir(out_dir) / STATE_FILE
    if not path.is_file():
        raise TlganError(f"{path}: no checkpoint to resume from; run without --resume to start training")
    tensors, manifest = load_tensors(path)
    if manifest.get("format") != FORMAT:
        raise TlganError(
            f"{path}: not a tlgan training checkpoint (format {manifest.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    saved_modules = set(manifest.get("modules", []))
    if saved_modules != set(modules):
        raise TlganError(
            f"{path}: holds networks {sorted(saved_modules)}, this training needs {sorted(modules)}; "
            f"it was written by another kind of training"
        )
    for name, module in modules.items():
        _load_module(name, module, tensors, path)
    for name, opt in optimizers.items():
        if name not in manifest.get("optimizers", {}):
            raise TlganError(
                f"{path}: has no state for optimizer {name!r}; it was written by another kind of training"
            )
        _load_optimizer(name, opt, manifest["optimizers"][name], tensors, path)
    if restore_rng and "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
        cuda_keys = sorted(
            (k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1])
        )
        cuda_states = [tensors[k].to(torch.uint8) for k in cuda_keys]
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
    return manifest
