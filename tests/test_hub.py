import hashlib

import pytest

from tlgan.errors import TlganError
from tlgan.models.hub import WeightsInfo, fetch


def test_fetch_file_url_checks_hash_and_caches(tmp_path):
    src = tmp_path / "src" / "model.safetensors"
    src.parent.mkdir()
    src.write_bytes(b"weights" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    path = fetch(WeightsInfo(src.as_uri(), digest), cache=tmp_path / "cache", progress=False)
    assert path.read_bytes() == src.read_bytes() and path.parent == tmp_path / "cache"
    src.unlink()  # a cached, verified file is not fetched again
    assert fetch(WeightsInfo(src.as_uri(), digest), cache=tmp_path / "cache", progress=False) == path


def test_fetch_refuses_wrong_hash_and_keeps_nothing(tmp_path):
    src = tmp_path / "w.bin"
    src.write_bytes(b"tampered")
    with pytest.raises(TlganError, match="SHA-256 mismatch"):
        fetch(WeightsInfo(src.as_uri(), "0" * 64), cache=tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").iterdir())


def test_fetch_missing_and_unsupported(tmp_path):
    with pytest.raises(TlganError, match="not found"):
        fetch(WeightsInfo((tmp_path / "nope.bin").as_uri()), cache=tmp_path / "c", progress=False)
    with pytest.raises(TlganError, match="only https"):
        fetch(WeightsInfo("ftp://example/x.bin"), cache=tmp_path / "c", progress=False)
