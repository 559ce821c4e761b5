"""Learned edits (tlgan.delta) as studio rows: their alpha rides in `amounts`, after the axis moves.

The models are trained here in a few steps on synthetic sequences (each a bent path through
the latent space), which is enough to give an edit that depends on the latent: the checks
below compare the studio with ``delta_edit`` exactly, not the edit's quality.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from stylegan_fixtures import tiny_stylegan2  # noqa: E402
from test_studio_api import decode, encode_png, small_classifier  # noqa: E402
from test_studio_spaces import NAMES, drawn, render, w_axes  # noqa: E402
from tlgan.delta import delta_edit, load_delta, train_delta  # noqa: E402
from tlgan.editing.edit import edit_latents  # noqa: E402
from tlgan.errors import TlganError  # noqa: E402
from tlgan.models import load_generator  # noqa: E402
from tlgan.studio.app import create_app  # noqa: E402
from tlgan.studio.learned import load_learned_edits  # noqa: E402

torch.set_num_threads(1)

TRAIN = dict(steps=40, batch_size=32, lr=3e-3, hidden=32, delta_dim=2, subspace=0, noise=0.0, progress=False)


def bent_sequences(generator, space: str, k: int = 8, n: int = 5, seed: int = 0) -> torch.Tensor:
    """K sequences of n latents of ``space``: from a sample, along one direction with a bend. (K, n, *shape)."""
    g = torch.Generator().manual_seed(seed)
    start = generator.sample_latents(k, seed=seed + 100, space=space)
    shape = start.shape[1:]
    a, b = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    t = torch.linspace(0, 1, n).view(1, n, *([1] * len(shape)))
    return start[:, None] + 2.0 * t * a + 1.5 * t**2 * b


def trained(tmp_path, generator, space: str, factor, seed: int = 0, generator_name=None):
    sets = [bent_sequences(generator, space, seed=seed)]
    return train_delta(
        sets,
        tmp_path / f"{factor or 'unnamed'}-{space}-{seed}",
        factor=factor,
        space=space,
        generator=generator_name or generator.name,
        seed=seed,
        **TRAIN,
    )


@pytest.fixture(scope="module")
def z_studio(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("learned")
    G = load_generator("toyfaces-render")
    axes = G.true_axes()
    yaw, light = trained(tmp, G, "z", "yaw", seed=0), trained(tmp, G, "z", "light", seed=1)
    app = create_app(
        G,
        small_classifier(axes.attributes),
        axes,
        generator_name="toyfaces-render",
        learned={"yaw": yaw, "light": light},
    )
    return G, axes, yaw, light, TestClient(app)


def test_learned_rows_are_listed_after_the_axes_with_their_kind(z_studio):
    G, axes, _yaw, _light, client = z_studio
    rows = client.get("/api/attributes").json()["attributes"]
    assert [r["name"] for r in rows] == list(axes.attributes) + ["yaw", "light"]
    assert [r["kind"] for r in rows] == ["axis"] * len(axes.attributes) + ["learned", "learned"]
    assert rows[-1]["metrics"]["factor"] == "light" and not rows[-1]["scored"]


def test_a_learned_row_is_delta_edit_of_the_axis_edited_latent(z_studio):
    G, axes, yaw, light, client = z_studio
    base = G.sample_latents_at([3], seed=0)[0]
    amounts = {"Smiling": 1.0, "yaw": 1.5, "light": -0.75}
    reply = render(client, seed=3, amounts=amounts, locks=["Male"])
    linear = edit_latents(base, axes, {"Smiling": 1.0}, ["Male"])
    expected = delta_edit(delta_edit(linear, yaw, 1.5), light, -0.75)  # axes first, then the rows in order
    latent = torch.tensor(reply["latent"], dtype=torch.float32)
    assert torch.equal(latent, expected)
    assert not torch.allclose(latent, linear, atol=1e-3)  # the learned edits did move the face
    assert np.array_equal(decode(reply["image"]), drawn(G, expected, "z"))
    # Probabilities follow the same face.
    scores = client.post("/api/probabilities", json={"seed": 3, "amounts": amounts, "locks": ["Male"]}).json()
    assert (
        scores["probabilities"]
        == render(client, seed=3, amounts=amounts, locks=["Male"], scores=True)["probabilities"]
    )


def test_alpha_zero_is_no_edit(z_studio):
    G, axes, yaw, _light, client = z_studio
    plain = render(client, seed=5, amounts={"Beard": -1.0})
    zero = render(client, seed=5, amounts={"Beard": -1.0, "yaw": 0.0, "light": 0.0})
    assert zero == plain
    latent = torch.tensor(plain["latent"], dtype=torch.float32)
    assert torch.equal(delta_edit(latent, yaw, 0.0), latent)


@pytest.mark.parametrize(
    "body, message",
    [
        ({"seed": 1, "amounts": {"yaww": 1.0}}, "did you mean 'yaw'"),
        ({"seed": 1, "locks": ["yaw"]}, "cannot be locked"),
        ({"seed": 1, "amounts": {"yaw": 11.0}}, "outside the allowed range"),
    ],
)
def test_bad_learned_moves_get_a_422(z_studio, body, message):
    client = z_studio[-1]
    response = client.post("/api/render", json=body)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_learned_edits_work_on_an_uploaded_photo_in_wp_tuned_or_not(tmp_path):
    G = tiny_stylegan2()
    axes = w_axes(G)
    model = trained(tmp_path, G, "wp", "yaw")
    client = TestClient(
        create_app(
            G,
            small_classifier(NAMES),
            axes,
            space="wp",
            invert_steps=15,
            tune_steps=10,
            learned={"yaw": model},
        )
    )
    with torch.inference_mode():
        photo = encode_png(G.synthesize(G.sample_latents_at([21], seed=0, space="wp"), "wp")[0])
    reply = client.post("/api/invert", files={"file": ("me.png", photo, "image/png")}, data={"tune": "true"})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    latent = torch.tensor(result["latent"], dtype=torch.float32).reshape(G.num_ws, G.w_dim)
    expected = delta_edit(edit_latents(latent, axes, {"Male": 1.0}, space="wp"), model, 2.0)
    tuned_G = client.app.state.studio.tuned.get(result["tuned_id"]).generator
    for tuned_id, generator in ((None, G), (result["tuned_id"], tuned_G)):
        body = {"latent": result["latent"], "amounts": {"Male": 1.0, "yaw": 2.0}}
        if tuned_id:
            body["tuned_id"] = tuned_id
        moved = render(client, **body)
        assert torch.equal(torch.tensor(moved["latent"]).reshape(G.num_ws, G.w_dim), expected)
        assert np.array_equal(decode(moved["image"]), drawn(generator, expected))


def test_a_learned_edit_of_another_space_or_generator_is_refused_at_start(tmp_path):
    G = tiny_stylegan2()
    axes, F = w_axes(G), small_classifier(NAMES)
    z_model = trained(tmp_path, G, "z", "yaw")
    with pytest.raises(TlganError, match="works in space 'z' but the studio edits 'wp'.*--space z"):
        create_app(G, F, axes, space="wp", learned={"yaw": z_model})
    w_model = trained(tmp_path, G, "w", "yaw", generator_name="some-other-gan")
    with pytest.raises(TlganError, match="trained for generator 'some-other-gan'"):
        create_app(G, F, axes, space="w", learned={"yaw": w_model})
    with pytest.raises(TlganError, match="has the name of an attribute axis"):
        create_app(G, F, axes, space="wp", learned={"Smiling": trained(tmp_path, G, "wp", "Smiling")})


def test_rows_are_named_by_factor_or_folder_and_names_are_unique(tmp_path):
    G = load_generator("toyfaces-render")
    named = trained(tmp_path, G, "z", "yaw")
    unnamed = trained(tmp_path, G, "z", None, seed=2)
    folder = tmp_path / "unnamed-z-2"
    edits = load_learned_edits([tmp_path / "yaw-z-0", folder])
    assert list(edits) == ["yaw", "unnamed-z-2"]
    assert torch.equal(edits["yaw"].reference_delta, named.reference_delta)
    assert torch.equal(edits["unnamed-z-2"].reference_delta, unnamed.reference_delta)
    with pytest.raises(TlganError, match="both named 'yaw'"):
        load_learned_edits([tmp_path / "yaw-z-0", tmp_path / "yaw-z-0"])
    assert load_delta(folder).factor is None


def test_serve_refuses_a_learned_edit_of_another_space_before_fitting_axes(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import tlgan.pipeline
    from tlgan.cli import cli

    G = load_generator("toyfaces-render")
    # An edit that says it works in w (toyfaces-render has only z), on latents of the right size.
    train_delta(
        [bent_sequences(G, "z")], tmp_path / "yaw-w-0", factor="yaw", space="w", generator=G.name, **TRAIN
    )
    monkeypatch.setattr(tlgan.pipeline, "default_axes", lambda *a, **k: pytest.fail("fitted axes first"))
    result = CliRunner().invoke(
        cli,
        [
            "serve",
            "--generator",
            "toyfaces-render",
            "--classifier",
            "toyfaces-classifier",
            "--port",
            "0",
            "--delta",
            str(tmp_path / "yaw-w-0"),
        ],
    )
    assert result.exit_code != 0
    text = result.output + str(result.exception or "")
    assert "works in space 'w' but the studio edits 'z'" in text, text
