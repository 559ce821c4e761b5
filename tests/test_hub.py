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


def test_fetch_over_http_checks_hash(tmp_path):
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    (served / "w.bin").write_bytes(b"weights over http" * 1000)
    digest = hashlib.sha256((served / "w.bin").read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/w.bin"
        with pytest.raises(TlganError, match=f"SHA-256 mismatch .*got {digest}"):
            fetch(WeightsInfo(url, "f" * 64), cache=tmp_path / "bad", progress=False)
        assert not list((tmp_path / "bad").iterdir())
        path = fetch(WeightsInfo(url, digest), cache=tmp_path / "cache", progress=False)
        assert path.read_bytes() == (served / "w.bin").read_bytes()
        with pytest.raises(TlganError, match="could not download"):
            fetch(WeightsInfo(url.replace("w.bin", "missing.bin")), cache=tmp_path / "c", progress=False)
    finally:
        server.shutdown()
        server.server_close()
