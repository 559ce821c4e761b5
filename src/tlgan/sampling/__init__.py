"""Sampling: latents -> images -> classifier scores, stored as resumable run folders."""

from tlgan.sampling.run import Run
from tlgan.sampling.sample import generate_and_score, sample

__all__ = ["Run", "sample", "generate_and_score"]
