"""Editing arithmetic: moves along axes, locks, straight walks."""

from __future__ import annotations

import pytest
import torch

from tlgan.axes import FeatureAxes
from tlgan.editing import edit_latents, interpolate
from tlgan.errors import TlganError

D = 16


@pytest.fixture
def axes():
    """Three correlated unit axes: cos(Beard, Male) = 0.7, Smiling mixes both and a third direction."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, 3, generator=g))
    male = q[:, 0]
    beard = 0.7 * q[:, 0] + (1 - 0.49) ** 0.5 * q[:, 1]
    smile = torch.nn.functional.normalize(0.3 * q[:, 0] - 0.4 * q[:, 1] + 0.8 * q[:, 2], dim=0)
    return FeatureAxes(torch.stack([beard, male, smile]), ["Beard", "Male", "Smiling"])


@pytest.fixture
def latents():
    return torch.randn(5, D, generator=torch.Generator().manual_seed(1))


def test_unlocked_move_changes_target_projection_by_exactly_the_amount(axes, latents):
    moved = edit_latents(latents, axes, {"Beard": 2.5})
    assert moved.shape == latents.shape and moved.dtype == latents.dtype
    assert torch.allclose((moved - latents) @ axes["Beard"], torch.full((5,), 2.5), atol=1e-5)
    # The move is along the axis only: nothing orthogonal to it changes.
    assert torch.allclose(moved - latents, 2.5 * axes["Beard"].expand(5, D), atol=1e-6)
    # Correlated attributes move too when nothing is locked: by amount * cosine.
    assert torch.allclose((moved - latents) @ axes["Male"], torch.full((5,), 2.5 * 0.7), atol=1e-5)


def test_locked_projections_do_not_change(axes, latents):
    moved = edit_latents(latents, axes, {"Beard": -3.0}, locks=["Male"])
    assert torch.allclose(moved @ axes["Male"], latents @ axes["Male"], atol=1e-5)
    step = moved - latents
    assert torch.allclose(
        step.norm(dim=1), torch.full((5,), 3.0), atol=1e-5
    )  # unit direction times the amount
    # What is left of the beard direction once male is held: sqrt(1 - 0.7^2) of the amount.
    assert torch.allclose(step @ axes["Beard"], torch.full((5,), -3.0 * (1 - 0.49) ** 0.5), atol=1e-5)


def test_two_locks_and_moving_a_locked_attribute(axes, latents):
    moved = edit_latents(latents, axes, {"Smiling": 1.5}, locks=["Beard", "Male"])
    for name in ("Beard", "Male"):
        assert torch.allclose(moved @ axes[name], latents @ axes[name], atol=1e-5)
    # Moving Male on purpose with Beard and Male locked keeps Beard fixed and does move Male.
    moved = edit_latents(latents, axes, {"Male": 2.0}, locks=["Beard", "Male"])
    assert torch.allclose(moved @ axes["Beard"], latents @ axes["Beard"], atol=1e-5)
    assert ((moved - latents) @ axes["Male"] > 1.0).all()


def test_several_moves_add_up(axes, latents):
    moved = edit_latents(latents[0], axes, {"Beard": 1.0, "Smiling": -2.0, "Male": 0.0})
    assert moved.shape == (D,)
    assert torch.allclose(moved, latents[0] + axes["Beard"] - 2.0 * axes["Smiling"], atol=1e-6)
    assert torch.equal(edit_latents(latents, axes, {}), latents)


def test_dtype_is_kept(axes, latents):
    moved = edit_latents(latents.double(), axes, {"Smiling": 1.0})
    assert moved.dtype == torch.float64
    assert torch.allclose(moved.float(), edit_latents(latents, axes, {"Smiling": 1.0}), atol=1e-6)


def test_edit_validation(axes, latents):
    with pytest.raises(TlganError, match="axes have size 16.*latents size 12"):
        edit_latents(latents[:, :12], axes, {"Beard": 1.0})
    with pytest.raises(TlganError, match="did you mean 'Smiling'"):
        edit_latents(latents, axes, {"Smiling_": 1.0})
    with pytest.raises(TlganError, match="did you mean 'Male'"):
        edit_latents(latents, axes, {"Beard": 1.0}, locks=["male"])
    with pytest.raises(TlganError, match="'Beard' is nan"):
        edit_latents(latents, axes, {"Beard": float("nan")})
    parallel = FeatureAxes(torch.stack([axes["Male"], -axes["Male"]]), ["Male", "Female"])
    with pytest.raises(TlganError, match="cannot move 'Male' with 'Female' locked"):
        edit_latents(latents, parallel, {"Male": 1.0}, locks=["Female"])


def test_interpolate_closed_form(axes, latents):
    steps = [-2.0, 0.0, 0.5, 3.0]
    path = interpolate(latents[0], axes["Smiling"], steps)
    assert path.shape == (4, D)
    for row, step in zip(path, steps, strict=True):
        assert torch.allclose(row, latents[0] + step * axes["Smiling"], atol=1e-6)
    assert torch.allclose((path - latents[0]) @ axes["Smiling"], torch.tensor(steps), atol=1e-5)
    assert torch.equal(interpolate(latents[:1], axes["Smiling"], [1.0])[0], latents[0] + axes["Smiling"])
    with pytest.raises(TlganError, match="same size"):
        interpolate(latents[0], axes["Smiling"][:8], steps)
    with pytest.raises(TlganError, match="finite"):
        interpolate(latents[0], axes["Smiling"], [float("inf")])
