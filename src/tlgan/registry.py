"""Small name -> factory registries (one per kind of thing), with close-match suggestions."""

from __future__ import annotations

import difflib
import importlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from tlgan.errors import TlganError

T = TypeVar("T")
# Held while a registry imports its built-in entries; reentrant, as that import may look names up.
_LOADING = threading.RLock()


class Registry(Generic[T]):
    """Maps names to factories; ``create(name)`` builds one.

    >>> GENERATORS = Registry("generator", builtins="tlgan.models.zoo")
    >>> @GENERATORS.register("toyfaces-render", "analytic renderer")
    ... def _make(): ...

    ``builtins`` names a module whose import registers the built-in entries; it is imported on
    the first lookup (``names``, ``in``, ``check``, ``describe``, ``create``), so that every
    caller sees them without importing it first, and ``import tlgan`` stays light.
    """

    def __init__(self, kind: str, builtins: str | None = None):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._descriptions: dict[str, str] = {}
        self._builtins = builtins

    def load_builtins(self) -> None:
        """Import the ``builtins`` module once (a no-op afterwards, or without one)."""
        if self._builtins is None:
            return
        with _LOADING:  # another thread's lookup waits until every built-in entry is there
            if self._builtins is not None:
                importlib.import_module(self._builtins)
                self._builtins = None

    def register(self, name: str, description: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise TlganError(f"a {self.kind} named {name!r} is already registered")
            self._factories[name] = factory
            self._descriptions[name] = description or (factory.__doc__ or "").strip().split("\n")[0]
            return factory

        return decorator

    def names(self) -> list[str]:
        self.load_builtins()
        return sorted(self._factories)

    def describe(self, name: str) -> str:
        self.check(name)
        return self._descriptions[name]

    def __contains__(self, name: str) -> bool:
        self.load_builtins()
        return name in self._factories

    def check(self, name: str) -> None:
        self.load_builtins()
        if name not in self._factories:
            raise TlganError(unknown_name_message(self.kind, name, self.names()))

    def create(self, name: str, **kwargs) -> T:
        self.check(name)
        return self._factories[name](**kwargs)


def unknown_name_message(kind: str, name: str, known: list[str]) -> str:
    """'unknown X 'foo'; did you mean ...?' with the close matches, or the full list."""
    lowered = {k.lower(): k for k in known}
    close = [lowered[c] for c in difflib.get_close_matches(str(name).lower(), list(lowered), n=3, cutoff=0.5)]
    if close:
        hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
    else:
        hint = "known: " + (", ".join(known) if known else "(none)")
    return f"unknown {kind} {name!r}; {hint}"
