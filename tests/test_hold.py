"""Holding attributes by the classifier's readings (tlgan.editing.hold) on a planted bend."""

from __future__ import annotations

import pytest
import torch

from tlgan.axes.disentangle import project_out
from tlgan.axes.feature_axes import FeatureAxes
from tlgan.editing.hold import held_attributes, hold_attributes
from tlgan.errors import TlganError
from tlgan.models.base import ModuleClassifier, ModuleGenerator

DIM = 8
BEND = 0.5


class _Show(torch.nn.Module):
    """Latent (N, 8) -> image (N, 3, 4, 4) in (-1, 1) that keeps every coordinate (tanh of a quarter)."""

    def forward(self, x):
        image = torch.zeros(len(x), 48)
        image[:, :DIM] = torch.tanh(x / 4)
        return image.reshape(-1, 3, 4, 4)


class _Read(torch.nn.Module):
    """Image -> logits of Male (bent: x1 + bend x0^2), Glasses (x2) and Smile (x3)."""

    def __init__(self, bend: float = BEND):
        super().__init__()
        self.bend = bend

    def forward(self, image):
        x = 4 * torch.atanh(image.reshape(len(image), -1)[:, :DIM].clamp(-0.999999, 0.999999))
        return torch.stack([2 * (x[:, 1] + self.bend * x[:, 0] ** 2), 2 * x[:, 2], 2 * x[:, 3]], 1)


def _world(bend: float = BEND):
    G = ModuleGenerator(_Show(), z_dim=DIM, name="bent-toy", img_resolution=4)
    F = ModuleClassifier(_Read(bend), ["Male", "Glasses", "Smile"], input_resolution=4, name="reader")
    # The axes a linear fit finds: each attribute's linear part (the bend is even in x0).
    axes = FeatureAxes(torch.eye(DIM)[1:4].clone(), ["Male", "Glasses", "Smile"], space="z")
    return G, F, axes


def _starts(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return 0.7 * torch.randn(n, DIM, generator=g)


def test_hold_undoes_a_bent_drift_that_a_linear_lock_cannot():
    G, F, axes = _world()
    starts = _starts()
    move = torch.zeros(DIM)
    move[0] = 1.0  # the factor: coordinate 0, which bends into Male
    edited = starts + move
    exact = edited.clone()
    exact[:, 1] -= BEND * ((starts[:, 0] + 1) ** 2 - starts[:, 0] ** 2)  # keeps Male's logit
    held = hold_attributes(G, F, starts, edited, axes, ["Male", "Glasses"], steps=200)
    locked = starts + project_out(move, axes.vectors[:2]).float()  # the linear lock
    male = lambda x: F.logits(G.synthesize(x))[:, 0]  # noqa: E731
    drift = (male(edited) - male(starts)).abs().mean()
    assert float(drift) > 0.5
    assert float((male(held) - male(starts)).abs().max()) < 0.02 * float(drift)
    assert float((held - exact).norm(dim=1).max()) < 0.02
    # The requested change is kept, and nothing moves outside the held axes.
    assert torch.allclose(held[:, [0, 3, 4, 5, 6, 7]], edited[:, [0, 3, 4, 5, 6, 7]])
    assert float((locked - exact).norm(dim=1).mean()) > 20 * float((held - exact).norm(dim=1).mean())


def test_hold_is_the_same_whatever_the_batch_and_leaves_held_latents_alone():
    G, F, axes = _world()
    starts = _starts(9, seed=1)
    edited = starts + torch.tensor([0.8, 0, 0, 0, 0, 0, 0, 0.3])
    whole = hold_attributes(G, F, starts, edited, axes, ["Male"], steps=200)
    pieces = torch.cat(
        [
            hold_attributes(G, F, starts[s : s + 4], edited[s : s + 4], axes, ["Male"], steps=200)
            for s in (0, 4, 8)
        ]
    )
    assert torch.allclose(whole, pieces, atol=1e-6)
    still = hold_attributes(G, F, starts, starts.clone(), axes, ["Male", "Glasses", "Smile"], steps=200)
    assert torch.equal(still, starts)  # no mismatch to begin with: the start is the best seen


def test_hold_refuses_what_it_cannot_use():
    G, F, axes = _world()
    starts = _starts(3)
    with pytest.raises(TlganError, match="pair up"):
        hold_attributes(G, F, starts, starts[:2], axes, ["Male"])
    wide = FeatureAxes(torch.eye(DIM + 1)[1:2].clone(), ["Male"], space="z")
    with pytest.raises(TlganError, match="9 dimensions and the latents 8"):
        hold_attributes(G, F, starts, starts, wide, ["Male"])
    with pytest.raises(TlganError, match="space 'w'"):
        hold_attributes(
            G, F, starts, starts, FeatureAxes(torch.eye(DIM)[1:2].clone(), ["Male"], space="w"), ["Male"]
        )
    with pytest.raises(TlganError, match="Male"):
        held_attributes(F, axes, "Mael")
    with pytest.raises(TlganError, match="meant to change"):
        held_attributes(F, axes, "Smile,Male", moved=["Smile"])
    assert held_attributes(F, axes, "all", moved=["Smile"]) == ["Male", "Glasses"]
    assert held_attributes(F, axes, " Glasses , Male,Glasses") == ["Glasses", "Male"]


def test_the_training_faces_choose_to_hold_where_the_change_depends_on_the_face():
    from tlgan.delta.evaluate import choose_hold

    values = torch.linspace(-1.0, 1.0, 5)
    g = torch.Generator().manual_seed(3)
    k = 6
    for bend, want in ((BEND, True), (0.0, False)):
        G, F, axes = _world(bend)
        x = (0.5 * torch.randn(k, 1, DIM, generator=g)).expand(k, len(values), DIM).clone()
        offset = x[:, :, 0].clone()  # each face starts elsewhere along the bent coordinate
        x[:, :, 0] = values[None] + offset
        x[:, :, 1] -= bend * (x[:, :, 0] ** 2 - offset**2)  # the true sequence keeps Male's reading
        with torch.no_grad():
            images = G.synthesize(x.reshape(-1, DIM)).reshape(k, len(values), 3, 4, 4)
        choice = choose_hold(G, F, x, values, images, axes, ["Male", "Glasses"], degree=0)
        # Bent: the shared change misses each face's own Male part, and holding puts it back.
        assert choice["hold"] is want, choice
        if want:
            assert choice["loo_psnr_held_db"] > choice["loo_psnr_db"] + 1.0, choice


def test_hold_brings_noisy_edits_of_a_face_dependent_bend_near_the_truth():
    from tlgan.delta.train import linear_direction

    values = torch.linspace(-1.0, 1.0, 5)
    noise = 0.1  # per coordinate of every latent, as an inversion's error

    def faces(k, seed):
        g = torch.Generator().manual_seed(seed)
        x = (0.5 * torch.randn(k, 1, DIM, generator=g)).expand(k, len(values), DIM).clone()
        offset = x[:, :, 0].clone()
        x[:, :, 0] = values[None] + offset
        x[:, :, 1] -= BEND * (x[:, :, 0] ** 2 - offset**2)
        return x, x + noise * torch.randn(x.shape, generator=g)

    G, F, axes = _world()
    _, train = faces(8, 0)
    clean, test = faces(6, 1)
    pairs = [(i, j) for i in range(5) for j in range(5) if i != j]
    ii, jj = torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
    start = test[:, ii].reshape(-1, DIM)
    truth = start + (clean[:, jj] - clean[:, ii]).reshape(-1, DIM)
    line = start + (values[jj] - values[ii]).repeat(6)[:, None] * linear_direction([train], [values]).float()
    path = (train - train.mean(1, keepdim=True)).mean(0)
    shared = start + (path[jj] - path[ii]).repeat(6, 1)  # the training faces' mean change
    held = hold_attributes(G, F, start, shared, axes, ["Male", "Glasses"])

    def error(x):
        return float((x - truth).norm(dim=1).mean())

    # The mean change misses each face's own bend by about as much as the line; held, it lands
    # within half the line's error (the noise of the training faces is what remains).
    assert error(shared) > 0.5 * error(line)
    assert error(held) < 0.5 * error(line), (error(held), error(line))
