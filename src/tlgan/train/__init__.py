"""Training tlgan's own networks: the attribute classifier and the DCGAN generator.

Both loops draw batch ``k`` and the noise of step ``k`` from (seed, k) alone and keep
their whole state in a pickle-free checkpoint (``OUT/checkpoint/``), so ``resume=True``
continues a run exactly where it stopped.
"""

from tlgan.train.checkpoint import has_checkpoint, restore_checkpoint, save_checkpoint
from tlgan.train.classifier import evaluate_classifier, train_classifier
from tlgan.train.common import resolve_device
from tlgan.train.encoder import train_encoder
from tlgan.train.generator import train_generator

__all__ = [
    "train_classifier",
    "train_generator",
    "train_encoder",
    "evaluate_classifier",
    "save_checkpoint",
    "restore_checkpoint",
    "has_checkpoint",
    "resolve_device",
]
