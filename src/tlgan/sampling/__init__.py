"""Sampling: latents -> images -> classifier scores, stored as resumable run folders.

:func:`sample` writes a run with an engine: :class:`LocalEngine` (this process, the default)
or :class:`RayEngine` (a Ray cluster; Ray is imported only when it runs).
"""

from tlgan.sampling.local_engine import LocalEngine
from tlgan.sampling.ray_engine import RayEngine
from tlgan.sampling.run import Run, open_run
from tlgan.sampling.sample import sample
from tlgan.sampling.shard import Engine, generate_and_score

__all__ = ["Run", "sample", "open_run", "generate_and_score", "Engine", "LocalEngine", "RayEngine"]
