"""Tuned generators of any kind: the base spec plus the tuned tensors, loaded strictly.

Tiny seeded DCGANs (16 px) wrapped as plain modules from a factory file, a few tuning steps each.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tlgan.errors import TlganError
from tlgan.models import load_generator

pytestmark = pytest.mark.usefixtures("one_thread")

FACTORY = """
import torch
from tlgan.models import ModuleGenerator
from tlgan.models.networks import DCGANGenerator


def make():
    torch.manual_seed(0)
    net = DCGANGenerator(z_dim=16, resolution=16, width=4).eval()
    return ModuleGenerator(net, z_dim=16, name="my-dcgan")
"""


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text(FACTORY)
    return f"{path}:make"


def photo(tmp_path, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(
        torch.rand(1, 3, 4, 4, generator=g), size=(16, 16), mode="bilinear"
    )
    path = tmp_path / "me.png"
    Image.fromarray((smooth[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.mark.parametrize("storage", ["full", "float16-delta"])
def test_cli_tune_a_factory_generator_and_edit_draws_it_bit_for_bit(tmp_path, factory, storage):
    from tlgan.axes import FeatureAxes
    from tlgan.cli import cli

    out = tmp_path / "out"
    args = ["invert", str(photo(tmp_path)), "--out", str(out), "--generator", factory, "--encoder", "none"]
    args += ["--steps", "10", "--tune", "--tune-steps", "15", "--tune-storage", storage, "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["images"][0]
    tuned = row["tuned_generator"]
    config = json.loads((out / "me-generator" / "tuned.json").read_text())
    assert config["storage"] == storage and config["base"] == factory and config["name"] == "my-dcgan"
    axes = tmp_path / "axes.safetensors"
    FeatureAxes(torch.nn.functional.normalize(torch.randn(1, 16), dim=1), ["A"]).save(axes)
    edited = tmp_path / "edited.png"
    r = CliRunner().invoke(
        cli,
        ["edit", "--generator", tuned, "--axes", str(axes), "--latent", row["latent"], "--attr", "A=0"]
        + ["--upscale", "1", "--out", str(edited)],
    )
    assert r.exit_code == 0, r.output
    # The tuned image as `tlgan invert` wrote it, drawn again from the folder: identical pixels.
    assert np.array_equal(np.asarray(Image.open(edited)), np.asarray(Image.open(row["reconstruction"])))
    assert row["tuned_psnr_db"] > row["psnr_db"]


def _tuned(factory: str, steps: int = 15):
    from tlgan.inversion import invert
    from tlgan.inversion.tune import tune_generator

    G = load_generator(factory)
    g = torch.Generator().manual_seed(4)
    target = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(16, 16)) * 2 - 1
    found = invert(G, target, steps=10, candidates=4)
    return G, target, found.latents[0], tune_generator(G, target[0], found.latents[0], steps=steps, lr=3e-3)


def test_float16_delta_halves_the_bytes_and_loads_only_onto_its_base(tmp_path, factory):
    from tlgan.inversion.encoder import psnr_db
    from tlgan.inversion.tune import save_tuned
    from tlgan.models.formats.tuned import stored_bytes

    G, target, pivot, tuned = _tuned(factory)
    full = save_tuned(tuned, tmp_path / "full", base_spec=factory, space="z", base=G)
    exact = tuned.psnr_db
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        unrounded = tuned.generator.synthesize(z)
    small = save_tuned(
        tuned, tmp_path / "small", base_spec=factory, space="z", storage="float16-delta", base=G
    )
    weights = sum(p.numel() for p in G.parameters())
    assert stored_bytes(small) < 0.5 * stored_bytes(full) + 4096
    assert stored_bytes(full) >= 4 * weights
    with torch.no_grad():
        rounded = float(psnr_db(tuned.generator.synthesize(pivot[None]).clamp(-1, 1), target)[0])
        # The rounded weights (kept in the tuned copy) are what the folder loads, bit for bit.
        assert torch.equal(load_generator(str(small)).synthesize(z), tuned.generator.synthesize(z))
    assert abs(rounded - exact) < 0.1, (rounded, exact)

    # The base's weights changed (another seed in the factory): the differences no longer apply.
    (tmp_path / "mine.py").write_text(FACTORY.replace("manual_seed(0)", "manual_seed(1)"))
    with pytest.raises(TlganError, match="other weights than the ones this generator was tuned from"):
        load_generator(str(small))
    # The full form does not depend on the base's weights, only on its architecture.
    with torch.no_grad():
        assert torch.equal(load_generator(str(full)).synthesize(z), unrounded)


def test_tuned_folders_are_checked_strictly(tmp_path, factory):
    from safetensors.torch import load_file, save_file

    from tlgan.inversion.tune import save_tuned

    G, _, _, tuned = _tuned(factory, steps=2)
    folder = save_tuned(tuned, tmp_path / "t", base_spec=factory, space="z", base=G)
    weights = folder / "tuned.safetensors"
    tensors = load_file(str(weights))
    dropped = dict(tensors)
    dropped.pop(sorted(dropped)[0])
    save_file(dropped, str(weights))
    with pytest.raises(TlganError, match="missing"):
        load_generator(str(folder))
    save_file({**tensors, "extra.weight": torch.zeros(2)}, str(weights))
    with pytest.raises(TlganError, match="unexpected"):
        load_generator(str(folder))
    # A folder whose base is code shipped inside it is refused before anything runs.
    (folder / "evil.py").write_text("raise SystemExit('ran')\n")
    config = json.loads((folder / "tuned.json").read_text())
    (folder / "tuned.json").write_text(json.dumps({**config, "base": f"{folder / 'evil.py'}:make"}))
    with pytest.raises(TlganError, match="does not run code that comes with a model folder"):
        load_generator(str(folder))
