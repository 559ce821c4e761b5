"""The bundled models load by name, the toyfaces export feeds the training loader, and model specs resolve."""

import pytest
import torch

from tlgan.data import CelebAFolder
from tlgan.errors import TlganError
from tlgan.models import load_classifier, load_generator
from tlgan.toyfaces import world
from tlgan.toyfaces.export import export_celeba

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bundled_models_load_by_name_and_agree_with_the_renderer():
    G, F, R = (
        load_generator("toyfaces-gan"),
        load_classifier("toyfaces-classifier"),
        load_generator("toyfaces-render"),
    )
    assert G.z_dim == 512 and G.img_resolution == 64 and list(F.attributes) == list(world.ATTRIBUTES)
    z = R.sample_latents(64, seed=123)
    with torch.no_grad():
        truth = R.labels(z)
        on_renders = F.logits(R.synthesize(z)) > 0
        on_generated = F.logits(G.synthesize(z)) > 0
    # the classifier reads renders; the generator shares the renderer's latent space
    assert (on_renders == truth).float().mean() > 0.95
    assert (on_generated == truth).float().mean() > 0.9


def test_export_is_read_back_by_the_training_loader(tmp_path):
    export_celeba(tmp_path / "faces", 30, seed=4, progress=False)
    data = CelebAFolder(tmp_path / "faces", "all", resolution=64, progress=False)
    assert list(data.attributes) == list(world.ATTRIBUTES) and len(data.images) == 30
    z = load_generator("toyfaces-render").sample_latents(30, seed=4)
    assert torch.equal(data.labels.bool(), world.labels(z))


def test_specs_torchscript_and_factory_file(tmp_path):
    net = torch.nn.Sequential(
        torch.nn.Linear(8, 3 * 4 * 4), torch.nn.Tanh(), torch.nn.Unflatten(1, (3, 4, 4))
    )
    torch.jit.save(torch.jit.script(net), str(tmp_path / "g.pt"))
    (tmp_path / "g.json").write_text('{"z_dim": 8}')
    G = load_generator(str(tmp_path / "g.pt"))
    assert G.synthesize(G.sample_latents(2)).shape == (2, 3, 4, 4)

    (tmp_path / "mine.py").write_text(
        "import torch\n"
        "from tlgan.models import ModuleClassifier\n"
        "def make():\n"
        "    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2))\n"
        "    return ModuleClassifier(net, ['A', 'B'], input_resolution=4, name='mine')\n"
    )
    F = load_classifier(f"{tmp_path / 'mine.py'}:make")
    assert F.logits(torch.zeros(1, 3, 4, 4)).shape == (1, 2)
    with pytest.raises(TlganError, match="has no function 'nope'"):
        load_classifier(f"{tmp_path / 'mine.py'}:nope")
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(TlganError, match="TorchScript"):
        load_generator(str(tmp_path / "bad.pt"))
    with pytest.raises(TlganError, match="did you mean 'toyfaces-classifier'"):
        load_classifier("toyfaces-clasifier")


def test_folder_url_spec_is_fetched_and_hash_checked(tmp_path, monkeypatch):
    import hashlib
    import shutil

    from tlgan.models.zoo import bundled_path

    src = tmp_path / "served"
    shutil.copytree(bundled_path("toyfaces-classifier"), src)
    monkeypatch.setenv("TLGAN_CACHE", str(tmp_path / "cache"))
    digest = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    F = load_classifier(f"{src.as_uri()}#sha256={digest}")
    assert list(F.attributes) == list(world.ATTRIBUTES)
    with pytest.raises(TlganError, match="SHA-256 mismatch"):
        load_classifier(f"{(tmp_path / 'served').as_uri()}/#sha256={'0' * 64}")
