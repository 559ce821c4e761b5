"""Reading pickled networks without running anything from the file.

A pickle is a program: each ``GLOBAL`` names a Python object that ``pickle`` imports and may
call. NVlabs' network pickles even carry their own source code, which the normal loader
imports and runs. :func:`restricted_load` runs the stream with an allowlist instead:

- the globals in :data:`SAFE_GLOBALS` rebuild tensors, NumPy arrays and plain containers;
- a format adds the few functions it needs (``functions``: our own replacements, for example
  NVlabs' persistent-object hook, which here returns the object's recorded state as data);
- classes named in ``data_classes`` (exact ``module.Name`` or a ``module.*`` prefix) are
  never imported: a :class:`PickledObject` stands in and keeps the constructor arguments and
  state the stream gives it;
- anything else stops the load with :class:`RefusedGlobal`, which names the global, before
  it is looked up. So ``os.system``, ``builtins.eval`` or an unknown module never run.

This allowlist is security code: widen it only with globals that build data, never to make
one more file load.
"""

from __future__ import annotations

import collections
import io
import pickle
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from tlgan.errors import TlganError


class RefusedGlobal(TlganError):
    """A pickle asked for a global outside the allowlist; nothing from it was run."""


class PickledObject:
    """Stand-in for an instance of a class tlgan does not import: the data the pickle gave it.

    ``pickled_class`` is "module.Name"; ``args`` the constructor arguments; ``state`` what
    ``__setstate__`` would have received (usually the instance ``__dict__``).
    """

    pickled_class = "?"
    args: tuple = ()
    state: Any = None

    def __init__(self, *args: Any):
        # Called for REDUCE-style pickles; NEWOBJ ones skip __init__, hence the class defaults.
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_class}>"


def _data_class(module: str, name: str) -> type:
    return type(name, (PickledObject,), {"pickled_class": f"{module}.{name}", "__module__": "tlgan.pickled"})


def _storage_from_bytes(data: bytes):
    # torch pickles a storage as bytes written by torch.save; read them back the safe way.
    return torch.load(io.BytesIO(data), weights_only=True)


def _rebuild_parameter(data: torch.Tensor, requires_grad: bool, backward_hooks: Any) -> torch.Tensor:
    # A plain tensor is all a state dict needs; hooks (which would be code) are refused earlier.
    return data.detach()


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles spell bytes as latin-1 text passed through codecs.encode.
    if encoding not in ("latin1", "latin-1"):
        raise RefusedGlobal(
            f"refused _codecs.encode with encoding {encoding!r}; only latin1 byte strings are expected"
        )
    return text.encode("latin1")


def _copyreg_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    # Protocol 0/1 spelling of "make an instance of cls": only stand-ins and plain containers.
    if isinstance(cls, type) and issubclass(cls, PickledObject):
        return cls()
    if cls in (dict, collections.OrderedDict, list, set):
        return cls() if state is None else cls(state)
    raise RefusedGlobal(f"refused copyreg._reconstructor for {cls!r}")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1
        from numpy.core import multiarray
    out: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    # Pickles name the module that wrote them; NumPy 1 and 2 spell it differently.
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out[(module, "_reconstruct")] = multiarray._reconstruct
        out[(module, "scalar")] = multiarray.scalar
    return out


SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "slice"): slice,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch", "Size"): torch.Size,
    **{
        ("torch", name): getattr(torch, name)
        for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "bool")
    },
    **_numpy_globals(),
}
"""Globals any tlgan pickle reader may use: all of them only build data."""


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, functions: Mapping[tuple[str, str], Callable], data_classes: Iterable[str]):
        super().__init__(file)
        self._functions = dict(functions)
        self._data_classes = tuple(data_classes)
        self._made: dict[tuple[str, str], type] = {}

    def _is_data_class(self, module: str, name: str) -> bool:
        full = f"{module}.{name}"
        return any(
            full == pattern or (pattern.endswith(".*") and full.startswith(pattern[:-1]))
            for pattern in self._data_classes
        )

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self._functions:
            return self._functions[key]
        if key in SAFE_GLOBALS:
            return SAFE_GLOBALS[key]
        if self._is_data_class(module, name):
            if key not in self._made:
                self._made[key] = _data_class(module, name)
            return self._made[key]
        raise RefusedGlobal(
            f"refused to load global '{module}.{name}': it is not on tlgan's list of safe names for "
            f"this format, so the file was stopped before anything in it ran"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedGlobal(
            f"refused a persistent id {pid!r}: this is a torch.save archive, not a plain pickle"
        )


def restricted_load(
    data: bytes | io.BufferedIOBase,
    *,
    functions: Mapping[tuple[str, str], Callable] | None = None,
    data_classes: Iterable[str] = (),
    source: str = "pickle",
) -> Any:
    """Unpickle ``data`` (bytes or a binary file) with the allowlist described above.

    ``functions`` maps (module, name) to the callable to use for that global; ``data_classes``
    lists classes to stand in for (``"dnnlib.util.EasyDict"``, ``"torch.nn.modules.*"``).
    Raises :class:`RefusedGlobal` for a global outside the list and TlganError naming
    ``source`` for a truncated or corrupt stream.
    """
    file = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return _Unpickler(file, functions or {}, data_classes).load()
    except RefusedGlobal as exc:
        raise RefusedGlobal(f"{source}: {exc}") from None
    except TlganError:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        RuntimeError,
    ) as exc:
        raise TlganError(
            f"{source}: not a readable pickle ({type(exc).__name__}: {exc}); the file may be truncated "
            f"or corrupt: download it again"
        ) from None


def first_globals(path, limit: int = 8, max_bytes: int = 1 << 20) -> list:
    """The first ``limit`` globals a pickle file names, read from its opcodes without running it ("module.Name")."""
    import pickletools

    with open(path, "rb") as f:
        head = f.read(max_bytes)
    names, strings = [], []
    try:
        for op, arg, _ in pickletools.genops(head):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings = (strings + [str(arg)])[-2:]
            elif op.name == "STACK_GLOBAL" and len(strings) == 2:
                names.append(".".join(strings))
            if len(names) >= limit:
                break
    except Exception:  # the head ends mid-opcode, or it is no pickle at all
        pass
    return names
