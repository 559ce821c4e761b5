"""Distillation with a patch critic (`tlgan train distill --adversarial`), and the sharpness measure."""

from __future__ import annotations

import json

import pytest
import torch

from distill_fixtures import checkpoint_state, distill_interrupted_at, teacher_generator
from tlgan.errors import TlganError
from tlgan.models.networks import load_pretrained
from tlgan.models.patchgan import PatchDiscriminator, receptive_field
from tlgan.train.distill import distill_generator, make_student

KWARGS = dict(
    batch_size=8,
    lr=3e-3,
    width=8,
    ema_decay=0.5,
    progress=False,
    sample_every=1000,
    adversarial=0.05,
    d_width=4,
    d_depth=2,
)

teacher = teacher_generator


def test_adversarial_distillation_resumes_bit_for_bit(tmp_path):
    """Interrupted at step 13 (checkpoint at 10) and resumed == uninterrupted: every weight, the
    critic's spectral-norm vectors, both optimizers' moments and the running losses."""
    straight = distill_generator(teacher(), tmp_path / "a", steps=20, checkpoint_every=10, **KWARGS)
    distill_interrupted_at(13, teacher(), tmp_path / "b", steps=20, checkpoint_every=10, **KWARGS)
    assert checkpoint_state(tmp_path / "b")[1]["step"] == 10
    resumed = distill_generator(
        teacher(), tmp_path / "b", steps=20, checkpoint_every=10, resume=True, **KWARGS
    )

    a, manifest_a = checkpoint_state(tmp_path / "a")
    b, manifest_b = checkpoint_state(tmp_path / "b")
    assert set(a) == set(b)
    assert any(k.startswith("module.D.") for k in a) and any(k.startswith("optim.D.") for k in a)
    assert any(k.endswith("_u") for k in a if k.startswith("module.D."))  # spectral norm state
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert manifest_a["info"] == manifest_b["info"]
    assert straight["d_loss"] == resumed["d_loss"] and straight["loss"] == resumed["loss"]
    ga, gb = load_pretrained(tmp_path / "a").state_dict(), load_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(ga[k], gb[k]) for k in ga)

    # Another critic weight is another run: refused, with the difference named.
    with pytest.raises(TlganError, match="adversarial: checkpoint 0.05, now 0.1"):
        distill_generator(
            teacher(),
            tmp_path / "b",
            steps=30,
            checkpoint_every=10,
            resume=True,
            **{**KWARGS, "adversarial": 0.1},
        )


def test_critic_learns_to_tell_teacher_from_frozen_student(tmp_path):
    """With the student frozen (lr 0) at its --init weights, the critic's patch logits end higher on
    the teacher's images than on the student's, and the saved student has the init's weights, bit for bit."""
    torch.manual_seed(3)
    init = make_student("dcgan", 8, 16, width=8)
    init.name = "init"
    kwargs = {**KWARGS, "lr": 0.0, "d_lr": 2e-2, "adversarial": 1.0}
    distill_generator(teacher(), tmp_path / "c", steps=60, init=init, init_spec="init", **kwargs)
    saved = load_pretrained(tmp_path / "c")
    # Weights stay; BatchNorm's running statistics move with every training-mode forward.
    init_sd, saved_sd = dict(init.named_parameters()), dict(saved.named_parameters())
    assert all(torch.equal(init_sd[k], saved_sd[k]) for k in init_sd)

    tensors, manifest = checkpoint_state(tmp_path / "c")
    assert manifest["info"]["settings"]["init"] == "init"
    critic = PatchDiscriminator(16, width=4, depth=2)
    critic.load_state_dict(
        {k[len("module.D.") :]: v for k, v in tensors.items() if k.startswith("module.D.")}
    )
    critic.eval()
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        real = critic(teacher().synthesize(z)).mean()
        fake = critic(saved.eval().synthesize(z)).mean()
    assert real - fake > 1.0, (float(real), float(fake))


def test_bad_settings_are_refused(tmp_path):
    other = make_student("dcgan", 8, 16, width=16)
    with pytest.raises(TlganError, match="--init is a DCGANGenerator"):
        distill_generator(teacher(), tmp_path / "x", steps=1, init=other, **KWARGS)
    with pytest.raises(TlganError, match="d_warmup is a number of steps"):
        distill_generator(teacher(), tmp_path / "y", steps=1, d_warmup=-1, **KWARGS)
    with pytest.raises(TlganError, match="adversarial must be 0"):
        distill_generator(teacher(), tmp_path / "z", steps=1, **{**KWARGS, "adversarial": -0.1})


def test_patch_discriminator_shapes_and_receptive_field():
    """One logit per patch; a pixel change moves only the logits whose patch covers it."""
    assert [receptive_field(d) for d in (1, 2, 3)] == [8, 18, 38]
    critic = PatchDiscriminator(32, width=4, depth=2, spectral_norm=False).eval()
    x = torch.zeros(1, 3, 32, 32)
    y = x.clone()
    y[0, :, 0, 0] = 1.0  # top-left corner
    with torch.no_grad():
        diff = (critic(y) - critic(x)).abs()[0, 0]
    assert diff.shape == (8, 8)
    moved = diff > 0
    assert moved[0, 0] and not moved[3:, :].any() and not moved[:, 3:].any()
    with pytest.raises(TlganError, match="depth 1 to 3"):
        PatchDiscriminator(16, depth=4)
    with pytest.raises(TlganError, match=r"takes images \(N, 3, 32, 32\)"):
        critic(torch.zeros(1, 3, 16, 16))


def test_laplacian_variance_closed_forms():
    """Flat image: 0; a one-pixel checkerboard of black and white: Laplacian +-4 everywhere, so
    the (unbiased) variance is 16 n / (n - 1) over the n interior pixels; a blurred copy is softer."""
    from tlgan.toyfaces.bundled_eval import laplacian_variance

    flat = torch.full((1, 3, 10, 10), 0.3)
    board = ((torch.arange(10)[:, None] + torch.arange(10)[None, :]) % 2).float() * 2 - 1
    board = board.expand(1, 3, 10, 10)
    got = laplacian_variance(torch.cat([flat, board]))
    n = 8 * 8
    assert got[0] == 0
    assert torch.isclose(got[1], torch.tensor(16.0 * n / (n - 1), dtype=torch.float64))
    blurred = torch.nn.functional.avg_pool2d(board, 3, stride=1, padding=1)
    assert laplacian_variance(blurred)[0] < 0.2 * got[1]
    with pytest.raises(TlganError, match="images must be"):
        laplacian_variance(torch.zeros(3, 10, 10))


def test_cli_records_the_adversarial_command(tmp_path, monkeypatch):
    import sys

    from click.testing import CliRunner

    from tlgan.cli import cli

    out = tmp_path / "g"
    args = ["train", "distill", "--out", str(out), "--steps", "2", "--batch-size", "2", "--width", "8"] + [
        "--adversarial",
        "0.01",
        "--d-width",
        "4",
        "--d-depth",
        "2",
        "--sample-every",
        "2",
        "--json",
    ]
    monkeypatch.setattr(sys, "argv", ["/venv/bin/tlgan", *args])
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    training = json.loads((out / "model.json").read_text())["training"]
    assert training["adversarial"] == 0.01 and training["d_depth"] == 2
    assert (
        training["command"].startswith("tlgan train distill ") and "--adversarial 0.01" in training["command"]
    )


def test_generator_ignores_the_critic_during_its_warmup(tmp_path):
    """While the critic learns alone (d_warmup), the generator's run is pure distillation, bit for
    bit; once it counts, the generator's weights differ."""
    plain = {**KWARGS, "adversarial": 0.0}
    distill_generator(teacher(), tmp_path / "plain", steps=12, **plain)
    distill_generator(teacher(), tmp_path / "warm", steps=12, d_warmup=12, **KWARGS)
    distill_generator(teacher(), tmp_path / "adv", steps=12, d_warmup=6, **KWARGS)
    p, w, a = (checkpoint_state(tmp_path / k)[0] for k in ("plain", "warm", "adv"))
    g_keys = [k for k in p if k.startswith(("module.G.", "module.G_ema.", "optim.G."))]
    assert g_keys and all(torch.equal(p[k], w[k]) for k in g_keys)
    assert not all(torch.equal(p[k], a[k]) for k in g_keys if k.startswith("module.G."))
    assert any(k.startswith("module.D.") for k in w) and not any(k.startswith("module.D.") for k in p)
