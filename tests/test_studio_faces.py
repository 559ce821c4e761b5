"""What a studio request means (:class:`tlgan.studio.faces.Faces`), with no model and no server.

Axes here are seeded random unit vectors that are deliberately not orthogonal, so every lock
has work to do; each edit is checked against the closed form computed independently in float64
NumPy: u_a is axis a minus its projection on the span of the other locked axes, renormalised,
and a face moves by sum_a amount_a * u_a.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tlgan.axes import FeatureAxes
from tlgan.delta.edit import delta_edit
from tlgan.delta.model import DeltaModel
from tlgan.editing.edit import edit_latents
from tlgan.errors import TlganError
from tlgan.studio.faces import LATENT_LIMIT, Faces
from tlgan.studio.schema import MAX_SEED

D = 6
NAMES = ["A", "B", "C", "E"]


def random_axes(space: str = "z", seed: int = 0) -> FeatureAxes:
    """Unit axes in D dimensions that share a common component (pairwise cosines around 0.5)."""
    gen = torch.Generator().manual_seed(seed)
    common = torch.randn(D, generator=gen)
    vectors = torch.nn.functional.normalize(torch.randn(len(NAMES), D, generator=gen) + common, dim=1)
    return FeatureAxes(vectors, NAMES, space=space)


def seed_latents(shape):
    """A seed -> latent function that counts its calls (the server's is the generator's sampler)."""
    calls = []

    def draw(seed: int) -> torch.Tensor:
        calls.append(seed)
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))

    return draw, calls


def z_faces(**kwargs) -> Faces:
    draw, _ = seed_latents((D,))
    return Faces(random_axes(), (D,), draw, **kwargs)


def wp_faces(num_ws: int = 8) -> Faces:
    draw, _ = seed_latents((num_ws, D))
    return Faces(random_axes("w"), (num_ws, D), draw, space="wp")


def unit_move(axes: FeatureAxes, name: str, locks) -> np.ndarray:
    """The closed form of u_name: the axis minus its least-squares projection on the other locked axes."""
    a = axes[name].double().numpy()
    others = [lock for lock in dict.fromkeys(locks) if lock != name]
    if others:
        M = np.stack([axes[lock].double().numpy() for lock in others], axis=1)  # (D, K)
        a = a - M @ np.linalg.solve(M.T @ M, M.T @ a)
    return a / np.linalg.norm(a)


def test_a_move_with_a_lock_is_the_projection_formula():
    faces = z_faces()
    axes = faces.axes
    a, b = axes["A"].double(), axes["B"].double()
    cos = float(a @ b)
    assert 0.2 < abs(cos) < 0.95  # the lock has something to remove
    base = faces.base_latent(seed=3)
    edited = faces.edit(base, {"A": 2.0}, ["B"])
    expected = base.double().numpy() + 2.0 * unit_move(axes, "A", ["B"])
    np.testing.assert_allclose(edited.double().numpy(), expected, atol=1e-6)
    moved = (edited - base).double()
    # The locked projection stays; the moved one changes by 2 |a - (a.b) b| = 2 sqrt(1 - cos^2).
    assert float(moved @ b) == pytest.approx(0.0, abs=1e-6)
    assert float(moved @ a) == pytest.approx(2.0 * (1 - cos**2) ** 0.5, abs=1e-6)
    # Without the lock the move is exactly 2 a, and the projection on B moves by 2 cos.
    free = (faces.edit(base, {"A": 2.0}, []) - base).double()
    np.testing.assert_allclose(free.numpy(), 2.0 * a.numpy(), atol=1e-6)
    assert float(free @ b) == pytest.approx(2.0 * cos, abs=1e-6)


def test_locks_compose_as_the_span_of_every_locked_axis():
    faces = z_faces()
    axes = faces.axes
    base = faces.base_latent(seed=11)
    edited = faces.edit(base, {"A": 1.5}, ["B", "C"])
    expected = base.double().numpy() + 1.5 * unit_move(axes, "A", ["B", "C"])
    np.testing.assert_allclose(edited.double().numpy(), expected, atol=1e-6)
    moved = (edited - base).double()
    for lock in ("B", "C"):  # both held, although B and C are not orthogonal to each other
        assert float(moved @ axes[lock].double()) == pytest.approx(0.0, abs=1e-6)
    # Lock order and repeats do not matter.
    again = faces.edit(base, *faces.check_moves({"A": 1.5}, ["C", "B", "C"]))
    assert torch.allclose(again, edited, atol=1e-6)
    # Moves add: each under the same locks, each unit move independent of the other amounts.
    both = faces.edit(base, {"A": 1.5, "E": -2.0}, ["B", "C"])
    alone = faces.edit(base, {"E": -2.0}, ["B", "C"]) - base
    assert torch.allclose(both, edited + alone, atol=1e-6)
    # Moving a locked attribute on purpose keeps the other locked one fixed.
    on_purpose = (faces.edit(base, {"B": 1.0}, ["B", "C"]) - base).double()
    assert float(on_purpose @ axes["C"].double()) == pytest.approx(0.0, abs=1e-6)
    assert float(on_purpose @ axes["B"].double()) > 0.1


def test_studio_edits_equal_edit_latents():
    """On the toyfaces renderer's true axes (512 dimensions, correlated attributes)."""
    from tlgan.models import load_generator

    G = load_generator("toyfaces-render")
    axes = G.true_axes()
    faces = Faces(axes, G.latent_shape(axes.space), lambda seed: G.sample_latents_at([seed], seed=0)[0])
    gen = torch.Generator().manual_seed(0)
    for trial in range(6):
        base = torch.randn(512, generator=gen)
        names = [axes.attributes[int(i)] for i in torch.randperm(len(axes.attributes), generator=gen)[:4]]
        amounts = {
            name: float(x) for name, x in zip(names[:3], torch.randn(3, generator=gen) * 3, strict=True)
        }
        locks = names[2:] if trial % 2 else names[3:]  # sometimes a moved attribute is locked too
        for _ in range(2):  # the second time from the cached directions
            assert torch.allclose(
                faces.edit(base, amounts, locks), edit_latents(base, axes, amounts, locks), atol=1e-6
            )


def test_a_wp_face_moved_on_layers_0_to_3_keeps_the_other_layers():
    faces = wp_faces(num_ws=8)
    base = faces.base_latent(seed=2)
    edited = faces.edit(base, {"A": 2.0}, ["B"], layers=range(4))
    step = torch.from_numpy(2.0 * unit_move(faces.axes, "A", ["B"])).float()
    assert torch.equal(edited[4:], base[4:])  # bit for bit
    assert torch.allclose(edited[:4], base[:4] + step, atol=1e-6)
    assert torch.allclose(
        edited,
        edit_latents(base, faces.axes, {"A": 2.0}, ["B"], space="wp", layers=range(4)),
        atol=1e-6,
    )
    # Without layers every layer takes the same step (what the studio's requests do).
    everywhere = faces.edit(base, {"A": 2.0}, ["B"])
    assert torch.allclose(everywhere, base + step, atol=1e-6)
    assert torch.equal(everywhere[:4], edited[:4])
    with pytest.raises(TlganError, match=r"outside this wp latent, which has layers 0-7"):
        faces.edit(base, {"A": 1.0}, [], layers=[2, 8])
    with pytest.raises(TlganError, match="layers apply to wp faces"):
        z_faces().edit(torch.zeros(D), {"A": 1.0}, [], layers=[0])


def test_the_base_latent_comes_from_the_seed_or_the_sent_latent():
    draw, calls = seed_latents((4, D))
    faces = Faces(random_axes("w"), (4, D), draw, space="wp", generator_name="g")
    first = faces.base_latent(seed=9)
    assert torch.equal(first, draw(9)) and calls == [9, 9]
    first += 1.0  # a copy: the seed's latent is not changed by what a caller does with it
    assert torch.equal(faces.base_latent(seed=9), draw(9))
    # Flat (row order) or nested, the same latent; a finite one comes back exactly.
    nested = draw(4).tolist()
    flat = draw(4).reshape(-1).tolist()
    assert torch.equal(faces.base_latent(latent=nested), faces.base_latent(latent=flat))
    assert torch.equal(faces.base_latent(latent=flat), draw(4))
    for kwargs, message in [
        ({}, "exactly one of `seed`"),
        ({"seed": 1, "latent": flat}, "you gave both"),
        ({"seed": MAX_SEED + 1}, "out of range"),
        ({"latent": flat[:-1]}, f"latent has {4 * D - 1} numbers but generator 'g' needs 4 x {D}"),
        ({"latent": nested[:3]}, f"shape \\[3, {D}\\]"),
        ({"latent": [[1.0, 2.0], [3.0]]}, "not a regular list"),
        (
            {"latent": flat[:5] + [float("nan")] + flat[6:]},
            r"1 NaN or infinite value\(s\) \(first at index \[5\]\)",
        ),
        ({"latent": flat[:2] + [LATENT_LIMIT * 2] + flat[3:]}, "latent entry 2 is 200"),
    ]:
        with pytest.raises(TlganError, match=message):
            faces.base_latent(**kwargs)


def test_moves_and_locks_are_checked_and_cleaned():
    faces = z_faces(amount_limit=4.0)
    clean, locks = faces.check_moves({"A": 1, "B": 0.0, "C": -4.0}, ["E", "B", "E"])
    assert clean == {"A": 1.0, "C": -4.0} and locks == ["E", "B"]  # zero moves dropped, locks once each
    for amounts, locks, message in [
        ({"Aa": 1.0}, [], "did you mean 'A'"),
        ({"A": float("inf")}, [], "must be finite"),
        ({"A": 4.5}, [], r"outside the allowed range \[-4, 4\]"),
        ({}, ["Q"], "in locks: "),
    ]:
        with pytest.raises(TlganError, match=message):
            faces.check_moves(amounts, locks)
    edited, base = faces.resolve(seed=1, amounts={"A": 1.0}, locks=["B", "B"])
    assert torch.equal(base, faces.base_latent(seed=1))
    assert torch.equal(edited, faces.edit(base, {"A": 1.0}, ["B"]))


def test_a_face_space_needs_axes_of_its_space():
    draw, _ = seed_latents((8, D))
    with pytest.raises(TlganError, match="axes fitted in 'z' cannot edit faces in 'wp'; fit axes in 'w'"):
        Faces(random_axes("z"), (8, D), draw, space="wp")
    assert Faces(random_axes("w"), (8, D), draw, space="wp").space == "wp"
    assert Faces(random_axes("w"), (D,), draw).space == "w"  # the axes' space by default


def learned_edit(seed: int = 0) -> DeltaModel:
    """A seeded, untrained learned edit of z latents of size D with a non-zero step: a curved move."""
    torch.manual_seed(seed)
    model = DeltaModel((D,), delta_dim=2, hidden=8, info={"factor": "yaw", "space": "z"}).eval()
    model.reference_delta.copy_(torch.tensor([1.0, -0.5]))
    return model


def test_learned_rows_apply_after_the_axis_moves_and_cannot_be_locked():
    draw, _ = seed_latents((D,))
    model = learned_edit()
    faces = Faces(random_axes(), (D,), draw, learned={"yaw": model})
    assert faces.row_names == [*NAMES, "yaw"]
    base = faces.base_latent(seed=6)
    axis_only = faces.edit(base, {"A": 2.0}, ["B"])
    edited = faces.edit(base, {"A": 2.0, "yaw": 1.5}, ["B"])
    assert torch.equal(edited, delta_edit(axis_only, model, 1.5))
    # The move depends on the face, so the order matters: learned first would land elsewhere.
    learned_first = delta_edit(base, model, 1.5) + (axis_only - base)
    assert (edited - learned_first).abs().max() > 1e-4
    assert torch.equal(faces.edit(base, {"yaw": 1.5}, []), delta_edit(base, model, 1.5))
    assert faces.check_moves({"yaw": -2.0}, [])[0] == {"yaw": -2.0}
    with pytest.raises(TlganError, match="'yaw' is a learned edit, which cannot be locked"):
        faces.check_moves({}, ["yaw"])
