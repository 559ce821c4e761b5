"""The Generator contract for raw synthesis and noise, over every registered generator and the
tiny seeded networks of each family (GANSpace's check that partial and full forward passes agree)."""

from __future__ import annotations

import pytest
import torch

from seed_fixtures import tiny_pggan, tiny_stylegan
from stylegan_fixtures import tiny_stylegan2
from tlgan.errors import TlganError
from tlgan.models import list_models, load_generator
from tlgan.models.networks import DCGANGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


def _dcgan():
    torch.manual_seed(0)
    return DCGANGenerator(z_dim=16, resolution=16, width=4).eval()


FIXTURES = {
    "tiny-stylegan2": lambda: tiny_stylegan2(0),
    "tiny-stylegan": lambda: tiny_stylegan(0),
    "tiny-pggan": lambda: tiny_pggan(0),
    "tiny-dcgan": _dcgan,
}
CASES = [f"registry:{name}" for name in list_models()["generators"]] + [f"fixture:{n}" for n in FIXTURES]
# Networks that add per-pixel noise: the contract must expose their maps (and only theirs).
NOISY = {"fixture:tiny-stylegan2", "fixture:tiny-stylegan"}


def _make(case: str):
    kind, name = case.split(":", 1)
    return load_generator(name) if kind == "registry" else FIXTURES[name]()


@pytest.mark.parametrize("case", CASES)
def test_raw_synthesis_of_the_mapped_latent_is_the_full_forward_pass(case):
    G = _make(case)
    z = G.sample_latents(3, seed=5)
    with torch.no_grad():
        full = G.synthesize(z, "z")
        if "wp" not in G.spaces:
            with pytest.raises(TlganError, match="no wp space"):
                G.synthesize_raw(torch.zeros(1, 2, 2))
            return
        raw = G.synthesize_raw(G.map_latents(z, "z", "wp"))
    assert raw.shape == full.shape
    # The raw range is [-1, 1] before synthesize's clamp; converted, the two passes agree.
    assert torch.allclose(raw.clamp(-1, 1), full, atol=1e-5)
    # Differentiable: the latent gets a gradient through the raw pass.
    wp = G.map_latents(z[:1], "z", "wp").detach().requires_grad_(True)
    G.synthesize_raw(wp).square().sum().backward()
    assert wp.grad is not None and float(wp.grad.abs().sum()) > 0


@pytest.mark.parametrize("case", CASES)
def test_noise_replacement_changes_the_image_only_where_the_network_has_noise(case):
    G = _make(case)
    maps = G.noise_maps()
    assert bool(maps) == (case in NOISY)
    if case not in NOISY:
        if "wp" in G.spaces:
            with pytest.raises(TlganError, match=G.name):
                G.synthesize_raw(G.sample_latents(1, space="wp"), {"noise": torch.zeros(1, 1, 4, 4)})
        return
    wp = G.sample_latents(2, seed=1, space="wp")
    stored = {name: buf.clone() for name, buf in maps.items()}
    with torch.no_grad():
        plain = G.synthesize_raw(wp)
        # The stored maps given back explicitly change nothing...
        same = {name: buf.reshape(1, 1, *buf.shape[-2:]) for name, buf in maps.items()}
        assert torch.allclose(G.synthesize_raw(wp, same), plain, atol=1e-6)
        # ...a different map changes the image, per image, and leaves the stored buffers as they were.
        name = sorted(maps)[-1]
        res = maps[name].shape[-1]
        other = torch.randn(2, 1, res, res, generator=torch.Generator().manual_seed(0))
        other[1] = maps[name].reshape(res, res)
        changed = G.synthesize_raw(wp, {name: other})
    assert not torch.allclose(changed[0], plain[0], atol=1e-4)
    assert torch.allclose(changed[1], plain[1], atol=1e-6)
    assert all(torch.equal(buf, stored[n]) for n, buf in G.noise_maps().items())
    with pytest.raises(TlganError, match="no noise map"):
        G.synthesize_raw(wp, {"not-a-map": other})
    # The maps returned are the buffers themselves: writing into one changes the network.
    with torch.no_grad():
        maps[name].copy_(other[0].reshape(maps[name].shape))
        assert torch.allclose(G.synthesize_raw(wp)[0], changed[0], atol=1e-6)
