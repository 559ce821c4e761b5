"""Generators tuned to one uploaded photo each (pivotal tuning), kept for the studio's requests.

An upload with ``tune`` set gets its own copy of the generator, fine-tuned around the photo's
latent (:func:`tlgan.inversion.tune.tune_generator`), and an opaque random id for it. Requests
that carry the id are drawn by that copy; every other request keeps the shared generator.

The store holds at most ``max_items`` copies and forgets the least recently used one when a
new one arrives. Each copy is a whole set of generator weights (about 120 MB for a 1024 px
StyleGAN2 in float32, a few MB for the bundled generator), so the bound is the memory bound.
A forgotten (or never issued) id raises :class:`TunedFaceGone`, which the studio answers with
410 and a request to upload the photo again. Thread-safe.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from tlgan.errors import TlganError
from tlgan.models.base import Generator

DEFAULT_MAX_TUNED = 4
"""Tuned generators the studio keeps by default (one copy of the weights each)."""
ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
"""What a tuned id looks like (URL-safe base64); anything else is refused before the store is asked."""


class TunedFaceGone(TlganError):
    """The tuned generator of an id is not (or no longer) in the store."""


@dataclass
class TunedFace:
    """One photo's tuned generator. ``key`` prefixes its images in the studio's image memo."""

    id: str
    generator: Generator
    info: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    @property
    def key(self) -> bytes:
        return b"tuned:" + self.id.encode("ascii") + b":"


class TunedStore:
    """At most ``max_items`` :class:`TunedFace` by id, least recently used forgotten first."""

    def __init__(self, max_items: int = DEFAULT_MAX_TUNED):
        if int(max_items) < 0:
            raise TlganError(f"max_tuned must be >= 0 (0 turns tuning off), not {max_items!r}")
        self.max_items = int(max_items)
        self._items: OrderedDict[str, TunedFace] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted_ = 0

    def check_enabled(self) -> None:
        """TlganError when the store holds nothing (``max_items`` 0): tuning is turned off."""
        if self.max_items == 0:
            raise TlganError(
                "tuning the generator to a photo is turned off on this server (max_tuned is 0); "
                "upload without tuning, or restart the studio with --max-tuned 1 or more"
            )

    def add(self, generator: Generator, info: dict[str, Any] | None = None) -> TunedFace:
        """Keep ``generator`` under a new random id (forgetting the oldest beyond the bound); returns its entry."""
        self.check_enabled()
        entry = TunedFace(secrets.token_urlsafe(18), generator, dict(info or {}))
        with self._lock:
            self._items[entry.id] = entry
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
                self.evicted_ += 1
        return entry

    def get(self, tuned_id: str) -> TunedFace:
        """The entry of ``tuned_id`` (now the most recently used); TunedFaceGone if it is not held."""
        with self._lock:
            entry = self._items.get(tuned_id)
            if entry is not None:
                self._items.move_to_end(tuned_id)
                return entry
        raise TunedFaceGone(
            f"the tuned generator {tuned_id[:12]}... is not on the server (it keeps the "
            f"{self.max_items} most recently used tuned photos, and forgets them when it restarts); "
            f"upload the photo again to tune a new one"
        )

    def __contains__(self, tuned_id: str) -> bool:
        with self._lock:
            return tuned_id in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
