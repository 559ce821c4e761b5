"""The DCGAN's upsampling option (`--upsample nearest`) and the Laplacian term of distillation."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from distill_fixtures import checkpoint_state, distill_interrupted_at, teacher_generator
from tlgan.errors import TlganError
from tlgan.io import load_tensors
from tlgan.models import load_generator
from tlgan.models.networks import DCGANGenerator, ResizeConvBlock, UpBlock, load_pretrained
from tlgan.train.checkpoint import checkpoint_dir
from tlgan.train.distill import distill_generator, edge_l1, laplacian_l1, make_student

KWARGS = dict(
    batch_size=8,
    lr=3e-3,
    width=8,
    ema_decay=0.5,
    progress=False,
    sample_every=1000,
    upsample="nearest",
    edge_weight=0.5,
    laplacian_weight=0.5,
)

teacher = teacher_generator


def test_default_dcgan_loads_the_bundled_weights_and_draws_as_before():
    """The bundled toyfaces-gan (model.json without "upsample") loads strictly into the
    transposed-conv DCGAN; its weights equal the file's bit for bit, and its images equal a
    functional re-statement of the transposed-conv forward pass bit for bit."""
    from tlgan.models.zoo import bundled_path

    G = load_generator("toyfaces-gan", "cpu").eval()
    folder = bundled_path("toyfaces-gan")
    assert "upsample" not in json.loads((folder / "model.json").read_text())["kwargs"]
    assert "upsample" not in G.config_kwargs and G.upsample == "transpose"
    tensors, _ = load_tensors(folder / "model.safetensors")
    state = G.state_dict()
    assert set(state) == set(tensors)
    assert all(torch.equal(state[k], tensors[k]) for k in tensors)

    def bn(x, prefix):
        return F.batch_norm(
            x,
            tensors[f"{prefix}.running_mean"],
            tensors[f"{prefix}.running_var"],
            tensors[f"{prefix}.weight"],
            tensors[f"{prefix}.bias"],
            training=False,
            eps=1e-5,
        )

    z = G.sample_latents(4, seed=5)
    x = F.linear(z, tensors["project.weight"]).view(4, -1, 4, 4)
    x = F.relu(bn(x, "stem_norm"))
    for i in range(len(G.blocks)):
        x = F.conv_transpose2d(x, tensors[f"blocks.{i}.conv.weight"], stride=2, padding=1)
        x = F.relu(bn(x, f"blocks.{i}.norm"))
    x = torch.tanh(
        F.conv_transpose2d(x, tensors["to_rgb.weight"], tensors["to_rgb.bias"], stride=2, padding=1)
    )
    with torch.no_grad():
        assert torch.equal(G.synthesize(z), x)


def test_resize_conv_has_no_checkerboard():
    """On a constant feature map a resize-conv block's output is constant away from the border;
    a stride-2 transposed conv with the same random weights alternates between pixel parities."""
    torch.manual_seed(0)
    x = torch.ones(1, 4, 6, 6)
    resize, transpose = ResizeConvBlock(4, 4).eval(), UpBlock(4, 4).eval()
    with torch.no_grad():
        a = resize.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))[..., 1:-1, 1:-1]
        b = transpose.conv(x)[..., 1:-1, 1:-1]
    assert a.shape == b.shape == (1, 4, 10, 10)
    assert torch.allclose(a, a[..., :1, :1].expand_as(a), atol=1e-6)
    assert (b[..., 0::2, 0::2] - b[..., 1::2, 1::2]).abs().max() > 1e-2


def test_nearest_student_shapes_and_config():
    G = DCGANGenerator(z_dim=8, resolution=16, width=8, upsample="nearest").eval()
    assert G.config_kwargs == {"z_dim": 8, "resolution": 16, "width": 8, "upsample": "nearest"}
    assert [type(b) for b in G.blocks] == [ResizeConvBlock, ResizeConvBlock]
    assert isinstance(G.to_rgb, torch.nn.Conv2d) and G.to_rgb.kernel_size == (3, 3)
    with torch.no_grad():
        images = G.synthesize(torch.randn(3, 8))
    assert images.shape == (3, 3, 16, 16) and images.abs().max() <= 1
    with pytest.raises(TlganError, match="upsample must be one of transpose, nearest"):
        DCGANGenerator(z_dim=8, resolution=16, width=8, upsample="bilinear")


def test_laplacian_and_edge_terms_closed_forms():
    """a * row^2 has Laplacian 2a everywhere inside; a ramp has none but constant differences."""
    rows = torch.arange(8.0)[:, None].expand(8, 8)
    quad = (0.03 * rows**2).expand(2, 3, 8, 8)
    ramp = (0.1 * rows).expand(2, 3, 8, 8)
    zero = torch.zeros(2, 3, 8, 8)
    assert torch.isclose(laplacian_l1(quad, zero), torch.tensor(0.06))
    assert laplacian_l1(ramp, zero) < 1e-6
    # Row differences 0.1 on 7 of 8 rows' worth of pairs; column differences 0: mean 0.05.
    assert torch.isclose(edge_l1(ramp, zero), torch.tensor(0.05))


def test_nearest_distillation_resumes_bit_for_bit(tmp_path):
    """A nearest-upsampling student with edge and Laplacian terms, interrupted at step 13
    (checkpoint at 10) and resumed, equals the uninterrupted run: checkpoint tensors, running
    loss and saved weights; model.json records the upsampling, which load_pretrained rebuilds."""
    straight = distill_generator(teacher(), tmp_path / "a", steps=20, checkpoint_every=10, **KWARGS)
    distill_interrupted_at(13, teacher(), tmp_path / "b", steps=20, checkpoint_every=10, **KWARGS)
    resumed = distill_generator(
        teacher(), tmp_path / "b", steps=20, checkpoint_every=10, resume=True, **KWARGS
    )
    a, manifest_a = checkpoint_state(tmp_path / "a")
    b, manifest_b = checkpoint_state(tmp_path / "b")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert manifest_a["info"] == manifest_b["info"] and straight["loss"] == resumed["loss"]
    settings = manifest_a["info"]["settings"]
    assert settings["upsample"] == "nearest" and settings["laplacian_weight"] == 0.5

    ga, gb = load_pretrained(tmp_path / "a"), load_pretrained(tmp_path / "b")
    assert ga.config_kwargs["upsample"] == "nearest" and isinstance(ga.blocks[0], ResizeConvBlock)
    sa, sb = ga.state_dict(), gb.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    with pytest.raises(TlganError, match="laplacian_weight: checkpoint 0.5, now 1.0"):
        distill_generator(
            teacher(),
            tmp_path / "b",
            steps=30,
            checkpoint_every=10,
            resume=True,
            **{**KWARGS, "laplacian_weight": 1.0},
        )


def test_upsample_settings_are_checked(tmp_path):
    with pytest.raises(TlganError, match="--upsample applies to --arch dcgan"):
        make_student("stylegan2", 8, 16, upsample="nearest")
    transposed = make_student("dcgan", 8, 16, width=8)
    with pytest.raises(TlganError, match="--init is a DCGANGenerator"):
        distill_generator(teacher(), tmp_path / "x", steps=1, init=transposed, **KWARGS)
    with pytest.raises(TlganError, match="laplacian_weight must be 0"):
        distill_generator(teacher(), tmp_path / "y", steps=1, **{**KWARGS, "laplacian_weight": -1.0})


def test_cli_passes_upsample_and_laplacian_weight(tmp_path):
    from click.testing import CliRunner

    from tlgan.cli import cli

    out = tmp_path / "g"
    args = ["train", "distill", "--out", str(out), "--steps", "2", "--batch-size", "2", "--width", "8"]
    args += ["--upsample", "nearest", "--laplacian-weight", "0.25", "--sample-every", "2", "--json"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    config = json.loads((out / "model.json").read_text())
    assert config["kwargs"]["upsample"] == "nearest"
    assert config["training"]["upsample"] == "nearest" and config["training"]["laplacian_weight"] == 0.25


def test_checkpoints_from_before_the_options_resume_as_transposed_without_laplacian(tmp_path):
    """A checkpoint that does not record upsample or laplacian_weight was trained with
    "transpose" and 0: it resumes with those, and refuses the new values, naming them."""
    from tlgan.io import save_tensors

    old = {**KWARGS, "upsample": "transpose", "edge_weight": 0.0, "laplacian_weight": 0.0}
    distill_interrupted_at(7, teacher(), tmp_path / "c", steps=10, checkpoint_every=5, **old)
    state = checkpoint_dir(tmp_path / "c") / "state.safetensors"
    tensors, manifest = load_tensors(state)
    for key in ("upsample", "laplacian_weight"):
        del manifest["info"]["settings"][key]
    save_tensors(state, tensors, manifest)
    with pytest.raises(TlganError, match="laplacian_weight: checkpoint 0.0, now 0.5"):
        distill_generator(
            teacher(),
            tmp_path / "c",
            steps=10,
            checkpoint_every=5,
            resume=True,
            **{**old, "laplacian_weight": 0.5},
        )
    distill_generator(teacher(), tmp_path / "c", steps=10, checkpoint_every=5, resume=True, **old)
    distill_generator(teacher(), tmp_path / "d", steps=10, checkpoint_every=5, **old)
    c, d = load_pretrained(tmp_path / "c").state_dict(), load_pretrained(tmp_path / "d").state_dict()
    assert all(torch.equal(c[k], d[k]) for k in d)
