"""The inversion benchmark: its memory count of tuning against planted leaks, and its --quick path."""

from __future__ import annotations

import pytest
import torch

from tlgan.bench.inversion import TuningMemoryProbe
from tlgan.inversion.tune import tune_generator
from tlgan.models.networks import DCGANGenerator

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny():
    torch.manual_seed(0)
    G = DCGANGenerator(z_dim=16, resolution=16, width=4).eval()
    target = (0.5 * torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(1))).tanh()
    pivot = G.sample_latents(1, seed=2)[0]
    return G, target, pivot


def _tune(G, target, pivot, steps):
    # patience above the step count: every step runs.
    return tune_generator(G, target, pivot, steps=steps, patience=steps + 1, locality_samples=2)


def test_tuning_keeps_one_copy_of_the_weights_whatever_the_steps():
    G, target, pivot = _tiny()
    rows = {}
    for steps in (2, 6):
        probe = TuningMemoryProbe(G)
        with probe.watching():
            _tune(G, target, pivot, steps)
        rows[steps] = probe.summary()
        assert rows[steps]["steps_sampled"] == steps
        assert rows[steps]["max_weights"] == pytest.approx(1.0)
        assert rows[steps]["max_gradients"] == pytest.approx(1.0)
        assert rows[steps]["max_adam_moments"] == pytest.approx(2.0)
        assert rows[steps]["max_largest_parameter_copies"] == 1
    # Nothing grows with the steps: the same bytes are alive after step 2 as after step 6.
    assert rows[6]["max_total"] == pytest.approx(rows[2]["max_total"], abs=0.05)
    assert rows[6]["last_step_total"] == pytest.approx(rows[6]["first_step_total"], abs=0.05)


def test_the_probe_sees_a_copy_kept_per_step_and_one_kept_per_photo():
    from torch.optim.optimizer import register_optimizer_step_post_hook

    G, target, pivot = _tiny()
    clean = TuningMemoryProbe(G)
    with clean.watching():
        _tune(G, target, pivot, 4)
    # A planted leak: a snapshot of the weights after every step.
    snapshots = []
    probe = TuningMemoryProbe(G)
    with probe.watching():
        handle = register_optimizer_step_post_hook(
            lambda opt, args, kwargs: snapshots.append(
                [p.detach().clone() for g in opt.param_groups for p in g["params"]]
            )
        )
        try:
            _tune(G, target, pivot, 4)
        finally:
            handle.remove()
    copies = [row["largest_parameter_copies"] for row in probe.samples_]
    # The probe's hook runs first, so step k sees the k - 1 snapshots before it, plus the tuned weights.
    assert copies == [1, 2, 3, 4]
    # Three snapshots of the weights on top of what a clean run keeps (images, buffers, ...).
    assert probe.samples_[-1]["other"] - clean.samples_[-1]["other"] == pytest.approx(3.0, abs=1e-3)
    assert probe.samples_[-1]["weights"] == pytest.approx(1.0)
    assert [row["largest_parameter_copies"] for row in clean.samples_] == [1] * 4

    # A tuned generator kept from the first photo is a second copy while the next one is tuned.
    probe = TuningMemoryProbe(G)
    with probe.watching():
        kept = _tune(G, target, pivot, 2)
        _tune(G, target, pivot, 2)
    assert [row["largest_parameter_copies"] for row in probe.samples_] == [1, 1, 2, 2]
    del kept
    # Without it (the benchmark's loop), the second photo starts from one copy again.
    probe = TuningMemoryProbe(G)
    with probe.watching():
        for _ in range(2):
            result = _tune(G, target, pivot, 2)
            del result
    assert [row["largest_parameter_copies"] for row in probe.samples_] == [1, 1, 1, 1]


def test_the_probe_ignores_latent_searches():
    from tlgan.inversion import invert

    G, target, _ = _tiny()
    probe = TuningMemoryProbe(G)
    with probe.watching():
        invert(G, target[None], steps=3, candidates=2)
    assert probe.samples_ == [] and probe.summary() == {"steps_sampled": 0}


@pytest.mark.slow  # the bundled 64 px models through four evaluation runs: about a minute on 2 busy cores
def test_bench_inversion_quick_on_the_bundled_models():
    from tlgan.bench.runner import run_bench

    out = run_bench(quick=True, only=["inversion"])
    assert out["inversion_photos"] == 2
    # Each stage is timed, and tuning reproduces the renders better than the latent search alone.
    for stage in ("encoder", "optimize", "tune"):
        assert out[f"inversion_{stage}_seconds_per_image"] > 0
        assert 10.0 < out[f"inversion_{stage}_psnr_db"] < 60.0
    assert out["inversion_tune_psnr_db"] > out["inversion_optimize_psnr_db"]
    assert out["inversion_tune_gain_db"] == pytest.approx(
        out["inversion_tune_psnr_db"] - out["inversion_optimize_psnr_db"], abs=2e-3
    )
    # The z-only generator without an encoder gains from tuning too.
    assert out["inversion_z_only_tune_gain_db"] > 0
    assert out["inversion_z_only_tune_seconds_per_image"] > 0
    for key in ("encoder", "optimize", "tune", "renders"):
        assert 0.0 <= out[f"inversion_{key}_attribute_agreement"] <= 1.0
    assert out["inversion_edit"] == "Smiling +2"
    assert 0.0 <= out["inversion_edit_tuned_rises_fraction"] <= 1.0
    assert 0.0 <= out["inversion_edit_tuned_others_mean_abs_change"] < 1.0
    # Memory: one tuned copy, its gradients and Adam's two moments, the same at 2 and at 5 steps.
    memory = out["inversion_tune_memory"]
    assert set(memory) == {"steps_2", "steps_5"}
    for steps, row in ((2, memory["steps_2"]), (5, memory["steps_5"])):
        assert row["steps_sampled"] == row["photos"] * steps
        assert row["max_weights"] == pytest.approx(1.0) and row["max_adam_moments"] == pytest.approx(2.0)
        assert row["max_largest_parameter_copies"] == 1
    assert memory["steps_5"]["max_total"] == pytest.approx(memory["steps_2"]["max_total"], abs=0.05)
    assert out["inversion_targets_met"]["one_weight_copy_per_photo"] is True
