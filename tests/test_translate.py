"""The translation route: identity and edited networks trained on a generator's own edit pairs."""

from __future__ import annotations

import pytest
import torch

from tlgan.axes.feature_axes import FeatureAxes
from tlgan.errors import TlganError
from tlgan.models import ModuleGenerator
from tlgan.translate import TranslationNet, blend, load_translation, train_translation, translate
from tlgan.translate import train as train_module


class Teacher(torch.nn.Module):
    """A smooth fixed map from 8-d latents to 16 px images in (-1, 1)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(3 * 16 * 16, 8, generator=g) / 3)

    def forward(self, z):
        return torch.tanh(z @ self.w.T).reshape(-1, 3, 16, 16)


@pytest.fixture(scope="module")
def generator():
    return ModuleGenerator(Teacher(), z_dim=8, name="teacher")


@pytest.fixture(scope="module")
def axes():
    direction = torch.zeros(2, 8)
    direction[0, 0] = 1.0  # "Up": the first latent coordinate
    direction[1, 1] = 1.0
    return FeatureAxes(direction, ["Up", "Other"], space="z")


SMALL = dict(width=8, depth=2, batch_size=16, lr=3e-3, checkpoint_every=5, progress=False)


@pytest.fixture(scope="module")
def trained(generator, axes, tmp_path_factory):
    out = tmp_path_factory.mktemp("translate") / "up"
    model = train_translation(
        generator, axes, "Up", out, amount=1.5, identity_steps=150, edit_steps=150, **SMALL
    )
    return model, out


def test_identity_network_reproduces_its_inputs_and_edited_one_moves_toward_the_edit(
    generator, axes, trained
):
    model, _ = trained
    z = generator.sample_latents(64, seed=5)
    with torch.no_grad():
        source = generator.synthesize(z)
        target = generator.synthesize(z + 1.5 * axes["Up"])
        untrained = TranslationNet(16, 8, 2)
        torch.nn.init.normal_(untrained.head.weight, std=0.05)
        identity_error = (model.identity(source) - source).abs().mean()
        baseline = (untrained(source) - source).abs().mean()
        edited = model.edited(source)
    assert identity_error < 0.02, identity_error  # [-1, 1] images: under 1 % of the range
    assert identity_error < 0.3 * baseline
    # The translation learned from pairs beats leaving the image alone clearly.
    assert (edited - target).abs().mean() < 0.7 * (source - target).abs().mean()


def test_amount_zero_is_the_identity_network_and_the_trained_amount_the_edited_one(generator, trained):
    model, out = trained
    images = generator.synthesize(generator.sample_latents(5, seed=2)).detach()
    with torch.no_grad():
        assert torch.equal(translate(images, model, 0.0), model.identity(images))
        assert torch.equal(translate(images, model, model.amount), model.edited(images))
        half = translate(images, model, model.amount / 2)
    state = blend(model.identity, model.edited, 0.5)
    key = "head.weight"
    expected = 0.5 * (model.identity.state_dict()[key] + model.edited.state_dict()[key])
    assert torch.allclose(state[key], expected, atol=1e-7)
    assert not torch.equal(half, translate(images, model, 0.0))
    # The folder loads back to the same networks.
    again = load_translation(out)
    assert again.attribute == "Up" and again.amount == 1.5
    assert torch.equal(translate(images, again, 0.75), translate(images, model, 0.75))


def test_a_model_refuses_images_of_another_resolution(trained):
    model, _ = trained
    with pytest.raises(TlganError, match=r"works at 16 x 16 px.*resize them to 16 px"):
        translate(torch.zeros(1, 3, 64, 64), model, 1.0)
    with pytest.raises(TlganError, match="amount"):
        translate(torch.zeros(1, 3, 16, 16), model, float("nan"))


def _interrupted_at(step: int, *args, **kwargs) -> None:
    real = train_module.step_latents

    def interrupting(generator, space, batch_size, seed, at):
        if at == step:
            raise KeyboardInterrupt
        return real(generator, space, batch_size, seed, at)

    train_module.step_latents = interrupting
    try:
        with pytest.raises(KeyboardInterrupt):
            train_translation(*args, **kwargs)
    finally:
        train_module.step_latents = real


@pytest.mark.parametrize("stop", [7, 13])  # in the identity phase, and in the edit phase
def test_an_interrupted_training_resumes_bit_for_bit(generator, axes, tmp_path, stop):
    kwargs = dict(amount=1.0, identity_steps=10, edit_steps=8, **SMALL)
    straight = train_translation(generator, axes, "Up", tmp_path / "straight", **kwargs)
    _interrupted_at(stop, generator, axes, "Up", tmp_path / "resumed", **kwargs)
    with pytest.raises(TlganError, match="--resume"):
        train_translation(generator, axes, "Up", tmp_path / "resumed", **kwargs)
    resumed = train_translation(generator, axes, "Up", tmp_path / "resumed", resume=True, **kwargs)
    for a, b in ((straight.identity, resumed.identity), (straight.edited, resumed.edited)):
        for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert torch.equal(x, y), k
    with pytest.raises(TlganError, match="other settings"):
        train_translation(
            generator, axes, "Up", tmp_path / "resumed", resume=True, **{**kwargs, "amount": 2.0}
        )


def test_bad_requests_are_named(generator, axes, tmp_path):
    with pytest.raises(TlganError, match="Upp"):
        train_translation(generator, axes, "Upp", tmp_path / "a", **SMALL)
    with pytest.raises(TlganError, match="positive"):
        train_translation(generator, axes, "Up", tmp_path / "b", amount=-1.0, **SMALL)
    with pytest.raises(TlganError, match="both translated and locked"):
        train_translation(generator, axes, "Up", tmp_path / "c", locks=["Up"], **SMALL)
    with pytest.raises(TlganError, match="translation.json is missing"):
        load_translation(tmp_path)
