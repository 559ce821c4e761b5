"""Training toyfaces-clip in phases: captions that state chosen attributes more often, and a
run continued with other loss or caption settings that still resumes bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tlgan.errors import TlganError

pytest.importorskip("transformers")

TINY = dict(batch_size=4, width=32, text_width=32, monitor_every=0, progress=False, checkpoint_every=1)
PHASE = dict(
    hard_weight=1.0, negatives=2, caption_focus={"Smiling": 1.0, "Big_Nose": 0.5}, focus_negatives=True
)


def test_caption_focus_states_the_named_attributes_and_leaves_the_rest_alone():
    from tlgan.toyfaces.captions import compose

    rng = np.random.default_rng(0)
    labels = rng.random((400, 17)) < 0.4
    # no focus draws nothing extra: the captions of earlier runs come out unchanged
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    assert [compose(row, a) for row in labels] == [compose(row, b, focus={}) for row in labels]

    focused = [compose(row, rng, focus={"Smiling": 1.0, "Big_Nose": 0.5})[1] for row in labels]
    plain = [compose(row, rng)[1] for row in labels]
    assert all("Smiling" in s for s in focused)
    # the stated value is the label, and a stated attribute appears in the words
    assert all(s["Smiling"] == row[2] for s, row in zip(focused, labels, strict=True))
    rate = np.mean(["Big_Nose" in s for s in focused])
    base = np.mean(["Big_Nose" in s for s in plain])
    # P(stated) = base + (1 - base) * 0.5; base ~ 0.3 for U(0.1, 0.6) and at most 7 of 17
    assert abs(rate - (base + (1 - base) * 0.5)) < 0.08, (rate, base)
    others = np.mean([len(s) - ("Smiling" in s) - ("Big_Nose" in s) for s in focused])
    assert abs(others - np.mean([len(s) - ("Smiling" in s) - ("Big_Nose" in s) for s in plain])) < 0.6


def test_hard_negatives_flip_the_named_attributes_first_without_drawing_more():
    from tlgan.toyfaces.captions import CLAUSES, compose, hard_negatives

    rng = np.random.default_rng(3)
    for _ in range(100):
        labels = rng.random(17) < 0.4
        _, stated = compose(labels, rng, focus={"Smiling": 1.0})
        a, b = np.random.default_rng(11), np.random.default_rng(11)
        plain = hard_negatives(labels, stated, a, 2)
        first = hard_negatives(labels, stated, b, 2, first=("Smiling",))
        assert a.random() == b.random()  # the same draws, so earlier runs' negatives are unchanged
        # the first negative states the opposite of the face's smile
        if labels[2]:
            assert any(w in first[0] for w in CLAUSES["Smiling"][1]), first[0]
        else:
            assert "with a smile" in first[0] or "smiling" in first[0].replace("not smiling", ""), first[0]
        assert len(plain) == len(first) == 2


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_new_phase_changes_the_loss_and_resumes_bit_for_bit(tmp_path, one_thread):
    from tlgan.train.clip import train_clip

    def stop_at(n):
        def on_step(step, _):
            if step == n:
                raise KeyboardInterrupt

        return on_step

    straight = tmp_path / "straight"
    train_clip(straight, steps=2, **TINY)
    first = _weights(straight)
    with pytest.raises(TlganError, match="--new-phase"):
        train_clip(straight, steps=4, resume=True, **TINY, **PHASE)
    with pytest.raises(TlganError, match="network or seed"):
        train_clip(straight, steps=4, new_phase=True, **TINY, seed=1)
    with pytest.raises(TlganError, match="not toyfaces attributes"):
        train_clip(straight, steps=4, new_phase=True, **TINY, caption_focus={"Smile": 1.0})
    with pytest.raises(TlganError, match="no checkpoint"):
        train_clip(tmp_path / "empty", steps=4, new_phase=True, **TINY, **PHASE)
    result = train_clip(straight, steps=4, new_phase=True, **TINY, **PHASE)
    assert result["phase_changes"] == [
        {
            "from_step": 2,
            "settings": {
                "negatives": 2,
                "caption_focus": {"Smiling": 1.0, "Big_Nose": 0.5},
                "focus_negatives": True,
                "hard_weight": 1.0,
            },
        }
    ]
    assert json.loads((straight / "training.json").read_text())["phase_changes"] == result["phase_changes"]
    assert not _equal(first, _weights(straight))

    # the same two phases, the second interrupted and resumed plainly with its own settings
    resumed = tmp_path / "resumed"
    train_clip(resumed, steps=2, **TINY)
    with pytest.raises(KeyboardInterrupt):
        train_clip(resumed, steps=4, new_phase=True, **TINY, **PHASE, on_step=stop_at(3))
    with pytest.raises(TlganError, match="--new-phase"):  # the checkpoint now holds the new phase
        train_clip(resumed, steps=4, resume=True, **TINY)
    again = train_clip(resumed, steps=4, resume=True, **TINY, **PHASE)
    assert again["phase_changes"] == result["phase_changes"]
    assert _equal(_weights(straight), _weights(resumed))

    # the hard-negative softmax is what the new phase added: without it the weights differ
    other = tmp_path / "other"
    train_clip(other, steps=2, **TINY)
    train_clip(other, steps=4, new_phase=True, **TINY, **{**PHASE, "hard_weight": 0.0})
    assert not _equal(_weights(straight), _weights(other))


def test_a_checkpoint_from_before_caption_focus_resumes_bit_for_bit(tmp_path, one_thread):
    from tlgan.io import load_tensors, save_tensors
    from tlgan.train.clip import train_clip

    straight, old = tmp_path / "straight", tmp_path / "old"
    train_clip(straight, steps=3, **TINY)

    def stop(step, _):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_clip(old, steps=3, **TINY, on_step=stop)
    # as an earlier version wrote it: no caption_focus among the settings, no phase record
    state = old / "checkpoint" / "state.safetensors"
    tensors, manifest = load_tensors(state)
    del manifest["info"]["settings"]["caption_focus"], manifest["info"]["phase_changes"]
    save_tensors(state, tensors, manifest)
    result = train_clip(old, steps=3, resume=True, **TINY)
    assert result["phase_changes"] == []
    assert _equal(_weights(straight), _weights(old))
