"""The Ray engine writes the same run folder as the local engine, bit for bit, also across
interruptions, engine changes and workers that die mid-shard.

One local Ray instance (2 CPUs) serves the whole module. The models come from spec strings
(the bundled toyfaces models, and a factory file written below whose generators misbehave
on purpose), because Ray workers load their own copies from the spec.
"""

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import tlgan
from tlgan.cli import cli
from tlgan.errors import TlganError
from tlgan.models import load_classifier, load_generator
from tlgan.sampling import LocalEngine, RayEngine, Run, sample
from tlgan.sampling.run import MANIFEST

pytestmark = pytest.mark.ray  # run by default; `-m "not ray"` leaves them out

N, SHARD, BATCH, THUMBS = 100, 20, 8, 8  # 5 shards of 20, batches of 8 (so a shard has a middle)
SETTINGS = dict(seed=7, shard_size=SHARD, thumbnails=THUMBS, progress=False)
GEN, CLF = "toyfaces-gan", "toyfaces-classifier"

# Generators that misbehave once, on purpose. They are loaded in Ray workers (and for the
# gated one, in a driver subprocess); "first time" is a marker file created atomically.
FACTORIES = '''
import os
import time
from pathlib import Path

from tlgan.models import load_generator

HERE = Path(__file__).parent
SEED, SHARD, BATCH = {seed}, {shard}, {batch}


def first_time(name):
    try:
        os.close(os.open(HERE / name, os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        return False


def plain():
    return load_generator("toyfaces-gan")


def _on_sample(generator, index, action):
    """Call action() when synthesize gets the batch holding sample ``index``."""
    target = generator.sample_latents_at([index], seed=SEED)
    real = generator.synthesize

    def synthesize(latents, space="z"):
        if (latents.cpu() == target).all(1).any():
            action()
        return real(latents, space)

    generator.synthesize = synthesize
    return generator


def crash_twice():
    """Kills its own process twice, each the first time it gets there: at the second batch of
    shard 1 (mid-computation), and while shard 3 is being written (after the temporary file,
    before the rename)."""
    import tlgan.io

    real = tlgan.io.save_file

    def save_file(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        if Path(filename).name.startswith(".shard-00003.") and first_time("crashed-writing"):
            os._exit(3)

    def die():
        if first_time("crashed-computing"):
            os._exit(3)

    tlgan.io.save_file = save_file
    return _on_sample(plain(), SHARD + BATCH, die)


def crash_always():
    """Kills its own process at shard 2, every time."""
    return _on_sample(plain(), 2 * SHARD, lambda: os._exit(3))


def nan_classifier():
    """The bundled classifier, answering NaN."""
    from tlgan.models import load_classifier

    classifier = load_classifier("toyfaces-classifier")
    classifier.logits = lambda images: classifier._logits(images) * float("nan")
    return classifier


def red_blue():
    """A classifier reading how red and how blue an image is."""
    import torch

    from tlgan.models import ModuleClassifier

    class RedBlue(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))], 1) * 10

    return ModuleClassifier(RedBlue(), ["Red", "Blue"], input_resolution=32)


def gated():
    """Waits at shards 3 and 4 for as long as the file ``gate`` exists."""
    def wait():
        while (HERE / "gate").exists():
            time.sleep(0.05)
    generator = plain()
    _on_sample(generator, 3 * SHARD, wait)
    return _on_sample(generator, 4 * SHARD, wait)
'''


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    # Workers at niceness 0 (Ray's default is 15): on a busy shared machine they would otherwise crawl.
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level=logging.WARNING,
        _system_config={"worker_niceness": 0},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def models():
    return load_generator(GEN), load_classifier(CLF)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, models):
    """The same run on the local engine, uninterrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    sample(
        *models,
        N,
        out,
        generator_spec=GEN,
        classifier_spec=CLF,
        engine=LocalEngine(batch_size=BATCH),
        **SETTINGS,
    )
    return out


@pytest.fixture
def factories(tmp_path):
    path = tmp_path / "factories.py"
    path.write_text(FACTORIES.format(seed=SETTINGS["seed"], shard=SHARD, batch=BATCH))
    return path


def assert_same_run(run, ref, other_fields=()):
    """Same files (so no temporary ones), same bytes in every shard, same manifest up to
    the timing, the engine and ``other_fields``."""
    run, ref = Path(run), Path(ref)
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in ref.iterdir())
    shards = sorted(p.name for p in ref.glob("shard-*.safetensors"))
    assert len(shards) == N // SHARD
    for name in shards:
        assert (run / name).read_bytes() == (ref / name).read_bytes(), name
    skip = {"seconds", "engine", *other_fields}
    a, b = (json.loads((p / MANIFEST).read_text()) for p in (run, ref))
    assert a["complete"] and {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


def cli_sample(*args):
    result = CliRunner().invoke(
        cli,
        [
            "sample",
            "-n",
            N,
            "--seed",
            SETTINGS["seed"],
            "--shard-size",
            SHARD,
            "--batch-size",
            BATCH,
            "--thumbnails",
            THUMBS,
            *map(str, args),
        ],
    )
    return result


def test_ray_run_equals_local_run(ray_local, factories, tmp_path, monkeypatch):
    """The CLI on both engines; a StyleGAN2 checkpoint sampled in w with truncation, so the
    workers must also build the same truncated generator from the manifest's options."""
    import torch

    from tlgan.io import load_tensors
    from tlgan.models.formats.fixtures import tiny_stylegan2, write_rosinality

    # Relative specs and --out, from another working directory than the workers': all must reach them.
    monkeypatch.chdir(tmp_path)
    write_rosinality(tiny_stylegan2(0), tmp_path / "g.pt")
    args = (
        "--generator",
        "g.pt",
        "--classifier",
        "factories.py:red_blue",
        "--truncation",
        0.5,
        "--space",
        "w",
    )
    for engine in ("local", "ray"):
        result = cli_sample(*args, "--out", engine, "--engine", engine, "--workers", 2, "--json")
        assert result.exit_code == 0, result.output
    assert_same_run(tmp_path / "ray", tmp_path / "local")
    manifest = json.loads((tmp_path / "ray" / MANIFEST).read_text())
    assert (
        manifest["engine"] == "ray"
        and json.loads((tmp_path / "local" / MANIFEST).read_text())["engine"] == "local"
    )
    assert manifest["generator"] == "g.pt" and manifest["classifier"] == "factories.py:red_blue"
    assert manifest["generator_options"] == {"truncation_psi": 0.5} and manifest["space"] == "w"
    untruncated = load_generator("g.pt").sample_latents_at(range(SHARD), seed=SETTINGS["seed"], space="w")
    stored = load_tensors(tmp_path / "ray" / "shard-00000.safetensors")[0]["latents"]
    assert not torch.allclose(stored, untruncated, atol=1e-3)  # the option did change what was sampled


def test_ray_shards_do_not_depend_on_the_batch_size(ray_local, models, reference, tmp_path):
    """Workers computing with batch sizes 1, 7 and 256 write the local run's bytes (batch 8)."""
    for batch in (1, 7, 256):
        out = tmp_path / f"b{batch}"
        engine = RayEngine(batch_size=batch, workers=2)
        sample(*models, N, out, generator_spec=GEN, classifier_spec=CLF, engine=engine, **SETTINGS)
        assert_same_run(out, reference)


def test_interrupted_locally_finished_on_ray(ray_local, models, reference, tmp_path, monkeypatch):
    mod = importlib.import_module("tlgan.sampling.shard")  # the module, not the function it exports
    real_save, calls = mod.save_tensors, {"n": 0}

    def killed_at_third_shard(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(mod, "save_tensors", killed_at_third_shard)
    with pytest.raises(KeyboardInterrupt):
        sample(
            *models,
            N,
            tmp_path / "run",
            generator_spec=GEN,
            classifier_spec=CLF,
            engine=LocalEngine(batch_size=BATCH),
            **SETTINGS,
        )
    monkeypatch.setattr(mod, "save_tensors", real_save)
    assert Run.open(tmp_path / "run", require_complete=False).done_shards() == [0, 1]
    run = sample(
        *models,
        N,
        tmp_path / "run",
        generator_spec=GEN,
        classifier_spec=CLF,
        engine=RayEngine(batch_size=BATCH, workers=2),
        resume=True,
        **SETTINGS,
    )
    assert run.manifest["engine"] == "ray"
    assert_same_run(tmp_path / "run", reference)


def test_ray_driver_killed_then_finished_locally(ray_local, reference, factories, tmp_path):
    """A real driver process on the shared Ray instance, killed with SIGKILL while shards 3 and 4
    are in progress; the run is then finished by the local engine."""
    gate, out, spec = tmp_path / "gate", tmp_path / "run", f"{factories}:gated"
    gate.touch()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(tlgan.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    }
    address = ray_local.get_runtime_context().gcs_address
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tlgan.cli import main; main()",
            "sample",
            "-n",
            str(N),
            "--seed",
            str(SETTINGS["seed"]),
            "--shard-size",
            str(SHARD),
            "--batch-size",
            str(BATCH),
            "--thumbnails",
            str(THUMBS),
            "--generator",
            spec,
            "--classifier",
            CLF,
            "--out",
            str(out),
            "--engine",
            "ray",
            "--workers",
            "2",
            "--address",
            address,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not all((out / f"shard-{k:05d}.safetensors").exists() for k in range(3)):
            assert driver.poll() is None, driver.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the Ray driver wrote no shards in 120 s"
            time.sleep(0.1)
        time.sleep(0.5)  # both workers are now waiting at the gate, inside shards 3 and 4
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        driver.stderr.close()
    # Ray ends the actors of a dead driver; wait for their CPUs so none of them is still writing.
    deadline = time.monotonic() + 60
    while ray_local.available_resources().get("CPU", 0) < 2:
        assert time.monotonic() < deadline, "the killed driver's workers did not end"
        time.sleep(0.2)
    gate.unlink()
    partial = Run.open(out, require_complete=False)
    assert partial.done_shards() == [0, 1, 2] and not partial.manifest["complete"]
    assert partial.manifest["engine"] == "ray"
    result = cli_sample("--generator", spec, "--classifier", CLF, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    assert json.loads((out / MANIFEST).read_text())["engine"] == "local"
    assert_same_run(out, reference, other_fields={"generator"})


def test_workers_killed_mid_shard_are_replaced(ray_local, models, reference, factories, tmp_path):
    # The driver describes the run with the plain models; only the workers load the crashing spec.
    run = sample(
        *models,
        N,
        tmp_path / "run",
        generator_spec=f"{factories}:crash_twice",
        classifier_spec=CLF,
        engine=RayEngine(batch_size=BATCH, workers=2, max_retries=2),
        **SETTINGS,
    )
    assert (tmp_path / "crashed-computing").exists() and (
        tmp_path / "crashed-writing"
    ).exists()  # workers did die
    assert run.manifest["complete"]
    # the killed writer's temporary file is gone, its shard was written again, identical
    assert_same_run(tmp_path / "run", reference, other_fields={"generator"})


@pytest.mark.slow  # two more worker start-ups; the retry path itself is covered by the test above
def test_worker_dying_every_time_is_reported_and_resumable(ray_local, models, factories, tmp_path):
    with pytest.raises(TlganError, match=r"shard [23] failed on Ray after 1 retries.*--resume"):
        sample(
            *models,
            N,
            tmp_path / "run",
            generator_spec=f"{factories}:crash_always",
            classifier_spec=CLF,
            engine=RayEngine(batch_size=BATCH, workers=1, max_retries=1),
            **SETTINGS,
        )
    done = Run.open(tmp_path / "run", require_complete=False).done_shards()
    assert {0, 1} <= set(done) and 2 not in done  # (a restarted worker may take shard 3 before shard 2)


def test_errors_inside_workers_keep_their_message(ray_local, models, factories, tmp_path):
    with pytest.raises(
        TlganError, match=r"^the classifier returned NaN or infinite scores for samples \d+\.\.\d+; check"
    ):
        sample(
            *models,
            N,
            tmp_path / "run",
            generator_spec=GEN,
            classifier_spec=f"{factories}:nan_classifier",
            engine=RayEngine(batch_size=BATCH, workers=1),
            **SETTINGS,
        )


def test_ray_requests_that_cannot_work_are_refused(models, tmp_path):
    pytest.importorskip("ray")
    cases = [
        (dict(generator_spec=None), {}, "spec strings"),
        ({}, dict(workers=0), "--workers must be at least 1"),
        ({}, dict(gpus_per_worker=1), "pass --device cuda"),
        ({}, dict(device="cuda"), "needs --gpus-per-worker"),
    ]
    for kwargs, engine_options, message in cases:
        options = {"generator_spec": GEN, "classifier_spec": CLF, **kwargs}
        engine = RayEngine(batch_size=BATCH, **engine_options)
        with pytest.raises(TlganError, match=message):
            sample(*models, N, tmp_path / "run", engine=engine, **options, **SETTINGS)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_portable_spec_makes_local_paths_absolute(factories, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from tlgan.sampling.ray_engine import portable_spec

    monkeypatch.chdir(tmp_path)
    assert portable_spec("factories.py:plain", "generator") == f"{factories.resolve()}:plain"
    (tmp_path / "folder").mkdir()
    assert portable_spec("folder", "generator") == str((tmp_path / "folder").resolve())
    assert portable_spec(GEN, "generator") == GEN
    assert portable_spec("https://example.org/models/g", "generator") == "https://example.org/models/g"


def test_without_ray_the_engine_says_how_to_install(models, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(TlganError, match=r"pip install 'tlgan\[ray\]'"):
        sample(
            *models,
            N,
            tmp_path / "run",
            generator_spec=GEN,
            classifier_spec=CLF,
            engine=RayEngine(batch_size=BATCH),
            **SETTINGS,
        )
    assert not (tmp_path / "run").exists()
    result = cli_sample("--out", tmp_path / "run", "--engine", "ray")
    assert isinstance(result.exception, TlganError) and "tlgan[ray]" in str(
        result.exception
    )  # main() prints it
