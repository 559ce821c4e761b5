"""Reading and writing artefacts: safetensors beside JSON metadata, always atomically.

Every file tlgan writes goes to a temporary name first and is renamed into place, so an
interrupted job never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tlgan.errors import TlganError

METADATA_KEY = "tlgan"


def cache_dir() -> Path:
    """Where tlgan caches fetched weights and fitted default axes: ``$TLGAN_CACHE`` or ~/.cache/tlgan."""
    return Path(os.environ.get("TLGAN_CACHE", Path.home() / ".cache" / "tlgan"))


def _create_temporary(path: Path) -> Path:
    """Create an empty, unused ``.NAME.XXXXXXXX.tmp`` beside ``path`` with the mode a plain
    ``open()`` gives (0o666 less the umask). ``tempfile.mkstemp`` would make it 0o600, and the
    rename would carry that private mode over to every file tlgan writes."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise TlganError(f"{path.parent}: could not create a temporary file beside {path.name}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds.

    The file gets the permissions a plain ``open()`` would give it (0o644 under umask 022).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temporary(path)
    mode = stat.S_IMODE(tmp_path.stat().st_mode)
    try:
        yield tmp_path
        # Some writers (safetensors) replace the file with a private one of their own.
        os.chmod(tmp_path, mode)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def json_safe(
    obj: Any, *, digits: int | None = None, max_items: int | None = None, max_depth: int = 32
) -> Any:
    """A JSON-ready copy of ``obj``, the one sanitiser for everything tlgan writes or serves as JSON.

    Mappings become dicts with string keys, tuples and lists become lists, tensors, numpy arrays
    and numpy scalars become numbers or lists, NaN and infinities become None, and anything else
    (paths, devices, dtypes) its ``str``. ``digits`` rounds floats; ``max_items`` keeps only the
    first items of each mapping or sequence (and of each tensor, flattened), and nesting deeper
    than ``max_depth`` is written as ``str`` (for info dicts of unknown size served to a browser).
    """

    def clean(value: Any, depth: int) -> Any:
        if depth > max_depth:
            return str(value)
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.numel() == 1 and max_items is not None:
                return clean(float(value), depth)
            flat = value.flatten() if max_items is not None else value
            return clean(flat.tolist() if max_items is None else flat[:max_items].tolist(), depth)
        if isinstance(value, np.ndarray):
            return clean(value.tolist(), depth)
        if isinstance(value, np.generic):
            return clean(value.item(), depth)
        if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                return None
            return round(value, digits) if digits is not None else value
        if isinstance(value, Mapping):
            items = list(value.items())
            items = items if max_items is None else items[:max_items]
            return {str(k): clean(v, depth + 1) for k, v in items}
        if isinstance(value, (list, tuple)):
            items = list(value) if max_items is None else list(value)[:max_items]
            return [clean(v, depth + 1) for v in items]
        if hasattr(value, "item") and callable(value.item):
            try:
                return clean(value.item(), depth)
            except (TypeError, ValueError):
                pass
        return str(value)

    return clean(obj, 0)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise TlganError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise TlganError(
            f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); the file is corrupt or not a tlgan file"
        ) from None


def save_tensors(
    path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any] | None = None
) -> None:
    """Write tensors (made contiguous, on CPU) and a JSON-able metadata dict to a safetensors file."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {METADATA_KEY: json.dumps(metadata or {})}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=meta)


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file written by :func:`save_tensors`; never executes code."""
    path = Path(path)
    if not path.is_file():
        raise TlganError(f"{path}: file not found")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY, "{}")
    except (SafetensorError, OSError, ValueError) as exc:
        raise TlganError(
            f"{path}: not a readable safetensors file ({exc}); it may be truncated or corrupt: re-download or re-create it"
        ) from None
    try:
        metadata = json.loads(raw)
    except json.JSONDecodeError:
        raise TlganError(f"{path}: its metadata is not valid JSON; the file is corrupt") from None
    return tensors, metadata


def save_module(
    directory: str | os.PathLike, module: torch.nn.Module, config: dict[str, Any], name: str = "model"
) -> None:
    """Save ``module``'s state dict as ``NAME.safetensors`` beside its constructor config ``NAME.json``."""
    directory = Path(directory)
    save_tensors(directory / f"{name}.safetensors", module.state_dict(), {"config": config})
    write_json(directory / f"{name}.json", config)


def load_state(module: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load a safetensors state dict into ``module`` strictly, naming missing or unexpected keys."""
    tensors, _ = load_tensors(path)
    return load_state_dict(
        module, tensors, f"{path}: weights", hint="; check that the JSON config belongs to these weights"
    )


def load_state_dict(
    module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str, hint: str = ""
) -> torch.nn.Module:
    """``module.load_state_dict(tensors, strict=True)`` after checking every key and shape.

    A TlganError starting with ``source`` names the first missing and unexpected keys or the
    tensor whose shape differs; ``hint`` is appended to the key message.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise TlganError(
            f"{source} do not match the {type(module).__name__} architecture "
            f"(missing: {missing[:5]}{'...' if len(missing) > 5 else ''}; unexpected: {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}){hint}"
        )
    for key, value in tensors.items():
        if own[key].shape != value.shape:
            raise TlganError(
                f"{source}: tensor {key!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(own[key].shape)}"
            )
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=True)
    return module
