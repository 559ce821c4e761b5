"""The local engine: shards computed one after another in this process."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from tlgan.errors import TlganError
from tlgan.models.base import Classifier, Generator
from tlgan.sampling.run import Run
from tlgan.sampling.shard import Engine, ShardSettings, sample_shard


@dataclass(frozen=True, kw_only=True)
class LocalEngine(Engine):
    """Sample in this process, shard after shard: the default engine.

    ``batch_size``: samples between progress reports; ``device``: where the networks run
    (the models passed to :func:`tlgan.sample` must be on it); ``threads``: torch's intra-op
    threads while sampling (None leaves the process's setting alone).
    """

    threads: int | None = None

    name = "local"

    def check(self, generator_spec: str | None, classifier_spec: str | None) -> None:
        super().check(generator_spec, classifier_spec)
        if self.threads is not None and self.threads < 1:
            raise TlganError(f"threads must be at least 1 (got {self.threads})")

    def sample_shards(
        self,
        generator: Generator,
        classifier: Classifier,
        run: Run,
        todo: list[int],
        settings: ShardSettings,
        bar: Any,
    ) -> float:
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            start = time.perf_counter()
            for k in todo:
                sample_shard(generator, classifier, run.path, k, settings, on_batch=bar.update)
            return time.perf_counter() - start
        finally:
            torch.set_num_threads(before)
