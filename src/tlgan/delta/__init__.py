"""Learned non-linear edits from a few sequences (Delta-GAN-Encoder, Diamant et al. 2021).

- :mod:`~tlgan.delta.sequences`: sequence folders (one sub-folder of ordered images per
  identity) and their inverted latents;
- :mod:`~tlgan.delta.joint`: inverting a sequence set jointly (one latent per identity plus a
  path they share), which removes most of the per-image wander;
- :mod:`~tlgan.delta.smooth`: the sequences' shared path smoothed into a polynomial of the
  factor value, which removes the part of the wander a smooth curve cannot follow;
- :mod:`~tlgan.delta.model`: the change encoder E and decoder D, saved as safetensors + JSON;
- :mod:`~tlgan.delta.train`: resumable training, and the least-squares straight line it is
  compared with;
- :mod:`~tlgan.delta.edit`: ``delta_edit`` / ``delta_walk``, the learned counterparts of the
  axis edits;
- :mod:`~tlgan.delta.evaluate`: measuring edits against the toyfaces renderer's true targets;
- :mod:`~tlgan.delta.warp`: a known curved warp of the latent, the benchmark's synthetic check
  of a path that is not straight.
"""

from tlgan.delta.edit import delta_edit, delta_walk
from tlgan.delta.model import DeltaModel, load_delta, save_delta
from tlgan.delta.sequences import SequenceSet, read_sequences, sequence_latents, write_sequences
from tlgan.delta.train import linear_direction, train_delta

__all__ = [
    "DeltaModel",
    "load_delta",
    "save_delta",
    "SequenceSet",
    "read_sequences",
    "sequence_latents",
    "write_sequences",
    "train_delta",
    "linear_direction",
    "delta_edit",
    "delta_walk",
]
