"""Shared fixtures: tiny seeded models that run on CPU in milliseconds."""

from __future__ import annotations

import pytest
import torch

from tlgan.models import ModuleClassifier, ModuleGenerator

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


class _LinearImage(torch.nn.Module):
    """z (N, D) -> a 3x8x8 'image' whose pixels are fixed linear mixes of z, squashed to [-1, 1]."""

    def __init__(self, dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.nn.Parameter(torch.randn(3 * 8 * 8, dim, generator=g) / (4 * dim**0.5))

    def forward(self, z):
        return torch.tanh(z @ self.weight.T).reshape(-1, 3, 8, 8)


class _ProjectionReader(torch.nn.Module):
    """Reads attribute logits back from _LinearImage pixels with a least-squares decoder."""

    def __init__(self, gen: _LinearImage, directions: torch.Tensor):
        super().__init__()
        pinv = torch.linalg.pinv(gen.weight.detach())  # (D, P)
        self.register_buffer("readout", directions @ pinv)  # (A, P)

    def forward(self, images):
        pre = torch.atanh(images.reshape(len(images), -1).clamp(-0.999999, 0.999999))
        return 3.0 * pre @ self.readout.T


@pytest.fixture(scope="module")
def one_thread():
    """Tiny layers run faster on one thread than on two contended ones; restores the count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_models():
    """(generator, classifier, true directions): logits are 3 * (z . w_a) for planted unit w_a."""
    dim, names = 16, ["Alpha", "Beta", "Gamma"]
    g = torch.Generator().manual_seed(1)
    directions = torch.nn.functional.normalize(torch.randn(len(names), dim, generator=g), dim=1)
    net = _LinearImage(dim)
    generator = ModuleGenerator(net, z_dim=dim, name="tiny-gen")
    classifier = ModuleClassifier(
        _ProjectionReader(net, directions), names, input_resolution=8, name="tiny-clf"
    )
    return generator.eval(), classifier.eval(), directions
