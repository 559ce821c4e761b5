import pytest
import torch

from tlgan.axes import FeatureAxes
from tlgan.cli.common import parse_int_list
from tlgan.errors import TlganError
from tlgan.io import load_state, load_tensors, save_tensors
from tlgan.registry import Registry


def test_registry_suggests_close_matches():
    reg = Registry("generator")
    reg.register("toyfaces-gan")(lambda: "G")
    reg.register("toyfaces-render")(lambda: "R")
    assert reg.create("toyfaces-gan") == "G"
    with pytest.raises(TlganError, match="did you mean 'toyfaces-gan'"):
        reg.create("toyface-gan")
    with pytest.raises(TlganError, match="known: toyfaces-gan, toyfaces-render"):
        reg.create("xyz")


def test_tensors_round_trip_and_corrupt_file(tmp_path):
    path = tmp_path / "t.safetensors"
    save_tensors(path, {"a": torch.arange(6.0).reshape(2, 3)}, {"note": [1, 2]})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["a"], torch.arange(6.0).reshape(2, 3)) and meta == {"note": [1, 2]}
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(TlganError, match="truncated or corrupt"):
        load_tensors(path)


def test_load_state_names_mismatched_keys(tmp_path):
    save_tensors(tmp_path / "w.safetensors", {"weight": torch.zeros(2, 2)})
    with pytest.raises(TlganError, match="missing: \\['bias'\\]"):
        load_state(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")
    save_tensors(tmp_path / "w.safetensors", {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)})
    with pytest.raises(TlganError, match="shape"):
        load_state(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")


def test_feature_axes_round_trip(tmp_path):
    axes = FeatureAxes(
        torch.eye(3, 5), ["A", "B", "C"], generator="g", method="glm", metrics={"A": {"val_accuracy": 0.9}}
    )
    axes.save(tmp_path / "axes.safetensors")
    back = FeatureAxes.load(tmp_path / "axes.safetensors")
    assert torch.equal(back.vectors, axes.vectors) and back.attributes == ["A", "B", "C"]
    assert back.metrics == {"A": {"val_accuracy": 0.9}} and back.generator == "g"
    with pytest.raises(TlganError, match="did you mean 'B'"):
        back["b"]


def test_parse_int_list():
    assert parse_int_list("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(TlganError):
        parse_int_list("a-b")
