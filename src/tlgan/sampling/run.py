"""Run folders: latents and classifier scores sampled from a generator, stored in shards.

Layout of a run folder::

    RUN/manifest.json             models (and generator options), space, attribute names, seed, n, shard size,
                              versions, complete flag
    RUN/shard-00000.safetensors   latents (S, D) float32, scores (S, A) float32 logits, indices (S,) int64
    RUN/shard-00001.safetensors   ... [thumbnails (S, 3, t, t) uint8 when asked for]
                                  [embeddings (S, E) float16 with a CLIP classifier]
    RUN/text_attributes.safetensors   attributes in words added later (see tlgan.sampling.text_attributes)

Shard k holds samples k*shard_size .. (k+1)*shard_size-1. Each shard is written to a
temporary file and renamed, so an interrupted run loses at most the shard in progress.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.io import load_tensors, read_json, write_json

FORMAT = "tlgan.run/1"
MANIFEST = "manifest.json"
SHARD_RE = re.compile(r"^shard-(\d{5})\.safetensors$")


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.safetensors"


class Run:
    """A run folder opened for reading. ``latents()`` and ``scores()`` concatenate the shards."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = Path(path)
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | os.PathLike, require_complete: bool = True) -> Run:
        path = Path(path)
        if not path.is_dir():
            raise TlganError(f"{path}: run folder not found; create one with `tlgan sample --out {path}`")
        if not (path / MANIFEST).is_file():
            raise TlganError(
                f"{path}: not a run folder (no {MANIFEST}); create one with `tlgan sample --out {path}`"
            )
        manifest = read_json(path / MANIFEST)
        if manifest.get("format") != FORMAT:
            raise TlganError(
                f"{path / MANIFEST}: not a tlgan run manifest (format {manifest.get('format')!r})"
            )
        run = cls(path, manifest)
        if require_complete and not manifest.get("complete", False):
            raise TlganError(
                f"{path}: the run was interrupted ({run.count_done()} of {manifest['n']} samples); "
                f"finish it with `tlgan sample --out {path} --resume`"
            )
        if require_complete and manifest["n"] == 0:
            raise TlganError(f"{path}: the run holds no samples; sample with -n > 0")
        return run

    # --- descriptive properties, straight from the manifest
    @property
    def attributes(self) -> list[str]:
        """The sampled attributes, then those added in words (:meth:`add_attributes`)."""
        added = self.text_attributes()
        return list(self.manifest["attributes"]) + (list(added.names) if added else [])

    @property
    def has_embeddings(self) -> bool:
        """Whether the shards hold image embeddings (sampled with a CLIP classifier)."""
        return bool(self.manifest.get("embeddings"))

    def text_attributes(self):
        """The attributes added in words (a :class:`~tlgan.sampling.text_attributes.TextAttributes`), or None.

        Read once per Run object (and again after :meth:`add_attributes`)."""
        from tlgan.sampling.text_attributes import read_text_attributes

        if "_text_attributes" not in self.__dict__:
            self._text_attributes = read_text_attributes(self.path)
        return self._text_attributes

    def prompts(self) -> dict[str, Any]:
        """Every attribute's prompt JSON, sampled then added ({} unless sampled with CLIP)."""
        added = self.text_attributes()
        return {**(self.manifest.get("prompts") or {}), **(added.prompts if added else {})}

    def load_classifier(self, device: str = "cpu"):
        """The run's classifier, rebuilt from its spec (a CLIP with every prompt of :meth:`prompts`)."""
        from tlgan.models import load_classifier

        return load_classifier(self.classifier, device, attributes=self.prompts() or None)

    def add_attributes(self, prompts, classifier=None, device: str = "cpu") -> list[str]:
        """Add attributes in words to this finished CLIP run, scored from its stored embeddings
        without generating an image; returns their names. See
        :func:`tlgan.sampling.text_attributes.add_text_attributes` (arguments and errors)."""
        from tlgan.sampling.text_attributes import add_text_attributes

        try:
            return add_text_attributes(self, prompts, classifier=classifier, device=device)
        finally:
            self.__dict__.pop("_text_attributes", None)

    @property
    def generator(self) -> str:
        return self.manifest["generator"]

    @property
    def classifier(self) -> str:
        return self.manifest["classifier"]

    @property
    def generator_options(self) -> dict[str, Any]:
        """Load-time settings of the generator (truncation), for ``load_generator(run.generator, **options)``."""
        return dict(self.manifest.get("generator_options") or {})

    @property
    def space(self) -> str:
        return self.manifest.get("space", "z")

    @property
    def n(self) -> int:
        return int(self.manifest["n"])

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    def shard_paths(self) -> list[Path]:
        count = -(-self.n // self.manifest["shard_size"])
        return [self.path / shard_name(k) for k in range(count)]

    def done_shards(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.path.iterdir() if (m := SHARD_RE.match(p.name)))

    def count_done(self) -> int:
        size = self.manifest["shard_size"]
        return sum(min(size, self.n - k * size) for k in self.done_shards() if k * size < self.n)

    def iter_shards(self) -> Iterator[dict[str, torch.Tensor]]:
        for path in self.shard_paths():
            tensors, _ = load_tensors(path)
            yield tensors

    def _cat(self, key: str) -> torch.Tensor:
        parts = [shard[key] for shard in self.iter_shards()]
        if not parts:
            raise TlganError(f"{self.path}: the run holds no samples")
        return torch.cat(parts)

    def latents(self) -> torch.Tensor:
        """(N, D) float32."""
        return self._cat("latents")

    def embeddings(self) -> torch.Tensor:
        """(N, E) float16 normalised image embeddings; TlganError for a run without them."""
        from tlgan.sampling.text_attributes import require_embeddings

        require_embeddings(self)
        return self._cat("embeddings")

    def scores(self) -> torch.Tensor:
        """(N, A) float32 classifier logits of :attr:`attributes` (added ones from the embeddings)."""
        return self.load()[1]

    def load(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents (N, D) float32, scores (N, A) float32), read in one pass over the shards."""
        added = self.text_attributes()
        lat, sco = [], []
        for shard in self.iter_shards():
            lat.append(shard["latents"])
            sco.append(shard["scores"])
            if added is not None:
                sco[-1] = torch.cat([sco[-1], added.scores(shard["embeddings"])], dim=1)
        if not lat:
            raise TlganError(f"{self.path}: the run holds no samples")
        return torch.cat(lat), torch.cat(sco)

    def check_generator(self, generator_name: str) -> None:
        if generator_name != self.generator:
            raise TlganError(
                f"{self.path} was sampled from generator {self.generator!r}, not {generator_name!r}; "
                f"use a run of the same generator or pass --generator {self.generator}"
            )


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    write_json(path / MANIFEST, manifest)


def open_run(path: str | os.PathLike, require_complete: bool = True) -> Run:
    """Open the run folder ``path`` (written by :func:`tlgan.sample` or ``tlgan sample``) for reading.

    ``run.latents()`` is (N, D) float32 in ``run.space``, ``run.scores()`` (N, A) float32
    logits of ``run.attributes``. Raises TlganError when ``path`` is not a run folder, or when
    the run was interrupted and ``require_complete`` (finish it with ``resume=True``).
    """
    return Run.open(path, require_complete=require_complete)
