import importlib
import json

import pytest
import torch

from tlgan.errors import TlganError
from tlgan.models.base import latent_rng_normal
from tlgan.sampling import LocalEngine, Run, sample
from tlgan.sampling.run import shard_name


def test_latent_depends_only_on_seed_and_index():
    whole = latent_rng_normal(5, range(600), 32)
    pieces = torch.cat([latent_rng_normal(5, range(0, 17), 32), latent_rng_normal(5, range(17, 600), 32)])
    assert torch.equal(whole, pieces)
    assert torch.equal(latent_rng_normal(5, [599, 3], 32), whole[[599, 3]])
    assert not torch.equal(latent_rng_normal(6, [3], 32), whole[[3]])
    # Sample i is row i % 256 of block i // 256 of Philox(key=seed, counter=[block, dim, 0, 0]),
    # however many rows of the block are drawn: runs sampled by any version resume alike.
    import numpy as np

    block = np.random.Generator(np.random.Philox(key=5, counter=[2, 32, 0, 0])).standard_normal(
        (256, 32), dtype=np.float32
    )
    assert torch.equal(latent_rng_normal(5, [512 + 3], 32)[0], torch.from_numpy(block[3]))
    assert torch.equal(whole[512:], torch.from_numpy(block[:88]))
    # roughly standard normal
    assert abs(float(whole.mean())) < 0.05 and abs(float(whole.std()) - 1) < 0.05


def test_sample_writes_run_and_scores_match_models(tiny_models, tmp_path):
    G, F, directions = tiny_models
    run = sample(
        G, F, 50, tmp_path / "run", seed=3, engine=LocalEngine(batch_size=7), shard_size=20, progress=False
    )
    latents, scores = run.load()
    assert latents.shape == (50, 16) and scores.shape == (50, 3)
    assert torch.equal(latents, G.sample_latents(50, seed=3))
    # the tiny classifier reads back 3 * z . w exactly (up to float error)
    assert torch.allclose(scores, 3 * latents @ directions.T, atol=1e-3)
    assert sorted(p.name for p in (tmp_path / "run").glob("shard-*")) == [shard_name(k) for k in range(3)]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (
        manifest["complete"] and manifest["attributes"] == ["Alpha", "Beta", "Gamma"] and manifest["n"] == 50
    )


def test_interrupted_then_resumed_equals_uninterrupted(tiny_models, tmp_path, monkeypatch):
    G, F, _ = tiny_models
    straight = sample(
        G, F, 45, tmp_path / "a", seed=1, engine=LocalEngine(batch_size=8), shard_size=10, progress=False
    )

    mod = importlib.import_module("tlgan.sampling.shard")

    real_save, calls = mod.save_tensors, {"n": 0}

    def crashing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed while the third shard is being written
        return real_save(*args, **kwargs)

    monkeypatch.setattr(mod, "save_tensors", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        sample(
            G, F, 45, tmp_path / "b", seed=1, engine=LocalEngine(batch_size=8), shard_size=10, progress=False
        )
    monkeypatch.setattr(mod, "save_tensors", real_save)
    partial = Run.open(tmp_path / "b", require_complete=False)
    assert partial.done_shards() == [0, 1]
    assert not list((tmp_path / "b").glob("*.tmp"))  # no half-written file left behind
    with pytest.raises(TlganError, match="interrupted"):
        Run.open(tmp_path / "b")
    with pytest.raises(TlganError, match="--resume"):
        sample(G, F, 45, tmp_path / "b", seed=1, shard_size=10, progress=False)
    resumed = sample(
        G,
        F,
        45,
        tmp_path / "b",
        seed=1,
        engine=LocalEngine(batch_size=8),
        shard_size=10,
        resume=True,
        progress=False,
    )
    for x, y in zip(straight.load(), resumed.load(), strict=True):
        assert torch.equal(x, y)  # bit for bit


def test_batch_size_changes_nothing_but_rounding(tiny_models, tmp_path):
    G, F, _ = tiny_models
    a = sample(G, F, 30, tmp_path / "a", seed=4, engine=LocalEngine(batch_size=30), progress=False).load()
    b = sample(G, F, 30, tmp_path / "b", seed=4, engine=LocalEngine(batch_size=7), progress=False).load()
    assert torch.equal(a[0], b[0])  # latents: bit for bit
    assert torch.allclose(a[1], b[1], atol=1e-4)  # scores: BLAS may block a matmul differently per batch size


def test_resume_with_other_settings_is_refused(tiny_models, tmp_path):
    G, F, _ = tiny_models
    sample(G, F, 10, tmp_path / "r", seed=1, shard_size=5, progress=False)
    with pytest.raises(TlganError, match="seed"):
        sample(G, F, 10, tmp_path / "r", seed=2, shard_size=5, resume=True, progress=False)


def test_bad_inputs(tiny_models, tmp_path):
    G, F, _ = tiny_models
    with pytest.raises(TlganError, match="at least 1"):
        sample(G, F, 0, tmp_path / "x", progress=False)
    with pytest.raises(TlganError, match="size 16"):
        G.synthesize(torch.zeros(2, 15))
    with pytest.raises(TlganError, match="NaN"):
        G.synthesize(torch.full((1, 16), float("nan")))
    with pytest.raises(TlganError, match="no latent space 'w'"):
        sample(G, F, 5, tmp_path / "w", space="w", progress=False)
    with pytest.raises(TlganError, match="not a run folder"):
        (tmp_path / "empty").mkdir()
        Run.open(tmp_path / "empty")
    with pytest.raises(TlganError, match="not a run folder"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "file.txt").write_text("x")
        sample(G, F, 5, tmp_path / "other", progress=False)


def test_nan_scores_are_reported(tiny_models, tmp_path):
    G, F, _ = tiny_models
    F.module.readout.fill_(float("nan"))
    with pytest.raises(TlganError, match="NaN or infinite scores"):
        sample(G, F, 5, tmp_path / "nan", progress=False)


def test_run_from_another_generator_is_named(tiny_models, tmp_path):
    G, F, _ = tiny_models
    run = sample(G, F, 5, tmp_path / "r", progress=False)
    with pytest.raises(TlganError, match="tiny-gen"):
        run.check_generator("toyfaces-gan")


def test_resume_removes_what_a_killed_writer_left(tiny_models, tmp_path):
    G, F, _ = tiny_models
    straight = sample(G, F, 30, tmp_path / "a", seed=2, shard_size=10, progress=False)
    out = tmp_path / "b"
    sample(G, F, 30, out, seed=2, shard_size=10, progress=False)
    # as a process killed (SIGKILL) while writing shard 1 leaves it: a temporary file, no shard
    (out / shard_name(1)).rename(out / f".{shard_name(1)}.x1y2.tmp")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    keep = out / "notes.tmp"  # not a shard's temporary file: left alone
    keep.write_text("mine")
    run = sample(G, F, 30, out, seed=2, shard_size=10, resume=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["manifest.json", "notes.tmp"] + [shard_name(k) for k in range(3)]
    )
    assert run.manifest["complete"] and run.manifest["engine"] == "local"
    for k in range(3):
        assert (out / shard_name(k)).read_bytes() == (tmp_path / "a" / shard_name(k)).read_bytes()
    assert torch.equal(run.latents(), straight.latents())


def test_shards_do_not_depend_on_the_batch_size(tmp_path):
    """The bundled networks' arithmetic depends on the batch it runs in; the shard code runs them
    on fixed chunks, so runs made (or resumed) with any batch size hold the same bytes."""
    from tlgan.models import load_classifier, load_generator

    G, F = load_generator("toyfaces-gan"), load_classifier("toyfaces-classifier")
    settings = dict(seed=5, shard_size=100, thumbnails=4, progress=False)
    for batch in (1, 7, 256):
        sample(G, F, 150, tmp_path / f"b{batch}", engine=LocalEngine(batch_size=batch), **settings)
    for k in range(2):
        reference = (tmp_path / "b1" / shard_name(k)).read_bytes()
        for batch in (7, 256):
            assert (tmp_path / f"b{batch}" / shard_name(k)).read_bytes() == reference, (batch, k)
    # A shard computed later with another batch size (a resumed run) gives the same bytes too.
    out = tmp_path / "b7"
    (out / shard_name(1)).unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    sample(G, F, 150, out, engine=LocalEngine(batch_size=33), resume=True, **settings)
    assert (out / shard_name(1)).read_bytes() == (tmp_path / "b1" / shard_name(1)).read_bytes()


def test_engines_are_checked_before_anything_is_written(tiny_models, tmp_path):
    G, F, _ = tiny_models
    with pytest.raises(TlganError, match="batch size must be positive"):
        sample(G, F, 5, tmp_path / "a", engine=LocalEngine(batch_size=0), progress=False)
    with pytest.raises(TlganError, match="threads must be at least 1"):
        sample(G, F, 5, tmp_path / "a", engine=LocalEngine(threads=0), progress=False)
    with pytest.raises(TlganError, match="engine must be a tlgan.LocalEngine"):
        sample(G, F, 5, tmp_path / "a", engine="local", progress=False)
    assert not (tmp_path / "a").exists()
