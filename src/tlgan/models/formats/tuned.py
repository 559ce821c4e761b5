"""A tuned generator stored as the spec it was built from plus its tuned tensors.

Pivotal tuning changes a generator's weights, never its architecture, so any generator tlgan
can load (a ``file.py:factory`` module, a TorchScript file, a checkpoint, a registered name)
can be stored as:

- ``tuned.json``: {"format": "tlgan.tuned-state/1", "base": the spec, "storage", "name",
  "base_sha256" (of the base's state dict), "factory_sha256" (of a factory file), "keys" (every
  state-dict key of the base), "tuned": what the tuning did};
- ``tuned.safetensors``: with storage ``full`` the whole tuned state dict (float32 as trained);
  with ``float16-delta`` only the tensors tuning changed, as float16 differences from the base
  (half the bytes of ``full``; the base must be the same weights, which ``base_sha256`` checks).

Loading builds the base from its spec and loads the tensors strictly: every key of the base
must be accounted for and none may be extra. A base given as ``file.py:factory`` runs that
file, as ``--generator file.py:factory`` does; the file must lie outside the tuned folder
(a folder that brings its own code is refused).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.io import load_state_dict, load_tensors, read_json, save_tensors, write_json

log = logging.getLogger(__name__)

FORMAT = "tlgan.tuned-state/1"
STORAGES = ("full", "float16-delta")
CONFIG, WEIGHTS = "tuned.json", "tuned.safetensors"


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of a state dict's keys, dtypes, shapes and values (CPU bytes), independent of key order."""
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{value.dtype}|{tuple(value.shape)}|".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def portable_spec(spec: str) -> str:
    """``spec`` with local paths made absolute (the tuned folder may be used from another directory)."""
    spec = str(spec)
    if ".py:" in spec and "://" not in spec:
        path, _, func = spec.rpartition(":")
        return f"{Path(path).resolve()}:{func}"
    if "://" not in spec and Path(spec).exists():
        return str(Path(spec).resolve())
    return spec


def save_tuned_state(
    generator: torch.nn.Module,
    directory: str | os.PathLike,
    *,
    base_spec: str,
    base: torch.nn.Module | None = None,
    storage: str = "full",
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``tuned.json`` + ``tuned.safetensors`` for ``generator``, tuned from the one ``base_spec`` builds.

    ``base`` is that original (loaded from ``base_spec`` when not given; its state dict must
    have the tuned one's keys and shapes). With ``float16-delta`` the tuned tensors are
    rounded to what is stored, *in ``generator`` itself*, so that it draws exactly what the
    folder will load. Returns the folder.
    """
    from tlgan.models import load_generator

    if storage not in STORAGES:
        raise TlganError(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
    spec = portable_spec(base_spec)
    if base is None:
        base = load_generator(spec)
    base_state = {k: v.detach().cpu() for k, v in base.state_dict().items()}
    tuned_state = generator.state_dict()
    if set(base_state) != set(tuned_state):
        raise TlganError("the tuned generator's tensors are not those of its base; tune a copy of the base")
    tensors: dict[str, torch.Tensor] = {}
    if storage == "full":
        tensors = {k: v.detach().cpu() for k, v in tuned_state.items()}
    else:
        with torch.no_grad():
            for key, value in tuned_state.items():
                original = base_state[key]
                current = value.detach().cpu()
                if torch.equal(current, original):
                    continue
                if not current.is_floating_point():
                    raise TlganError(
                        f"tuning changed the non-float tensor {key!r}; store it with storage 'full'"
                    )
                delta = (current.float() - original.float()).half()
                tensors[key] = delta
                value.copy_(_apply_delta(original, delta).to(value.device))
    config: dict[str, Any] = {
        "format": FORMAT,
        "base": spec,
        "storage": storage,
        "name": str(getattr(generator, "name", "custom")),
        "base_sha256": state_sha256(base_state),
        "keys": sorted(base_state),
        "tuned": dict(meta or {}),
    }
    if ".py:" in spec:
        config["factory_sha256"] = _file_sha256(Path(spec.rpartition(":")[0]))
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / WEIGHTS, tensors, {"format": FORMAT, "storage": storage})
    write_json(directory / CONFIG, config)  # last: its presence marks a complete folder
    return directory


def _apply_delta(original: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The stored weight: base + float16 difference, computed in float32, in the base's dtype."""
    return (original.float() + delta.float()).to(original.dtype)


def is_tuned_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / CONFIG).is_file()


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """``tuned.json`` of a tuned folder, checked for the keys loading needs."""
    path = Path(directory) / CONFIG
    config = read_json(path)
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise TlganError(f"{path}: not a tuned generator ({FORMAT}); it is written by `tlgan invert --tune`")
    missing = [k for k in ("base", "storage", "keys", "base_sha256") if k not in config]
    if missing or config["storage"] not in STORAGES:
        raise TlganError(f"{path}: incomplete or unknown storage (missing {missing}); re-run the tuning")
    return config


def load_tuned_folder(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the base generator from the spec in ``tuned.json`` and load the tuned tensors strictly.

    TlganError naming the folder when: the base cannot be built, a factory file lies inside the
    folder, the base's keys differ from those recorded, the tensors do not match (missing,
    extra, shape), or a float16-delta folder meets a base with other weights than it was tuned from.
    """
    from tlgan.models import load_generator

    directory = Path(directory)
    config = read_config(directory)
    spec = str(config["base"])
    where = directory / CONFIG
    if ".py:" in spec and "://" not in spec:
        factory = Path(spec.rpartition(":")[0]).resolve()
        if directory.resolve() in factory.parents:
            raise TlganError(
                f"{where}: its base {spec!r} is code inside the tuned folder; tlgan does not run code "
                f"that comes with a model folder"
            )
        if factory.is_file() and config.get("factory_sha256") not in (None, _file_sha256(factory)):
            log.warning("%s: the factory file %s changed since this generator was tuned", where, factory)
    if Path(spec).resolve() == directory.resolve():
        raise TlganError(f"{where}: a tuned folder cannot be its own base")
    try:
        base = load_generator(spec)
    except TlganError as exc:
        raise TlganError(f"{where}: cannot build its base generator {spec!r}: {exc}") from None
    state = base.state_dict()
    if sorted(state) != sorted(config["keys"]):
        raise TlganError(
            f"{where}: the base {spec!r} no longer has the tensors it was tuned with "
            f"({len(state)} now, {len(config['keys'])} recorded); rebuild it as it was, or tune again"
        )
    tensors, _ = load_tensors(directory / WEIGHTS)
    if config["storage"] == "full":
        load_state_dict(base, tensors, f"{directory / WEIGHTS}: tuned tensors")
    else:
        if state_sha256(state) != config["base_sha256"]:
            raise TlganError(
                f"{where}: the base {spec!r} has other weights than the ones this generator was tuned from "
                f"(its float16 differences only apply to those); restore the base's weights or tune again"
            )
        unknown = sorted(set(tensors) - set(state))
        if unknown:
            raise TlganError(f"{directory / WEIGHTS}: tensors {unknown[:5]} are not in the base {spec!r}")
        for key, delta in tensors.items():
            if delta.shape != state[key].shape or delta.dtype != torch.float16:
                raise TlganError(
                    f"{directory / WEIGHTS}: {key!r} is {delta.dtype} {tuple(delta.shape)}, expected float16 "
                    f"{tuple(state[key].shape)}"
                )
        new_state = {k: (_apply_delta(v.cpu(), tensors[k]) if k in tensors else v) for k, v in state.items()}
        load_state_dict(base, new_state, f"{directory / WEIGHTS}: tuned tensors")
    if config.get("name"):
        base.name = str(config["name"])
    return base.to(device).eval()


def stored_bytes(directory: str | os.PathLike) -> int:
    """Bytes a tuned folder takes on disk (all its files)."""
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.is_file())
