"""A fixed teacher and an interrupted distillation, shared by the tests that train students."""

from __future__ import annotations

import pytest
import torch


class SmoothTeacher(torch.nn.Module):
    """A smooth fixed map from 8-d latents to 16 px images in (-1, 1)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(3 * 16 * 16, 8, generator=g) / 3)

    def forward(self, z):
        return torch.tanh(z @ self.w.T).reshape(-1, 3, 16, 16)


def teacher_generator():
    """:class:`SmoothTeacher` as a tlgan generator (z, 8-d) named "teacher"."""
    from tlgan.models import ModuleGenerator

    return ModuleGenerator(SmoothTeacher(), z_dim=8, name="teacher")


def checkpoint_state(out_dir):
    """(tensors, manifest) of the training checkpoint in ``out_dir``."""
    from tlgan.io import load_tensors
    from tlgan.train.checkpoint import checkpoint_dir

    return load_tensors(checkpoint_dir(out_dir) / "state.safetensors")


def distill_interrupted_at(step: int, teacher, out_dir, **kwargs) -> None:
    """Run ``distill_generator(teacher, out_dir, **kwargs)`` and stop it (KeyboardInterrupt) as step ``step`` begins."""
    import tlgan.train.distill as mod

    real_lr = mod.cosine_lr

    def interrupting(at, *args, **kw):
        if at == step:
            raise KeyboardInterrupt
        return real_lr(at, *args, **kw)

    mod.cosine_lr = interrupting
    try:
        with pytest.raises(KeyboardInterrupt):
            mod.distill_generator(teacher, out_dir, **kwargs)
    finally:
        mod.cosine_lr = real_lr
