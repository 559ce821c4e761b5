"""Fetching weight files for real users: a URL, a SHA-256 to check, a local cache.

Works with ``https://`` and ``file://`` URLs (and plain paths). A download goes to a
temporary file and is renamed into the cache only after its hash matched, so an
interrupted or tampered download never lands under the final name.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm.auto import tqdm

from tlgan.errors import TlganError
from tlgan.io import atomic_path, cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsInfo:
    """Where a weights file lives and what it must hash to."""

    url: str
    sha256: Optional[str] = None
    filename: Optional[str] = None

    @property
    def name(self) -> str:
        return self.filename or Path(urllib.parse.urlparse(self.url).path).name or "weights"


def default_cache() -> Path:
    return cache_dir() / "weights"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(info: WeightsInfo, cache: Optional[Path] = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Return a local path to ``info``'s file, downloading it into ``cache`` if needed."""
    cache = Path(cache) if cache else default_cache()
    target = cache / info.name
    if target.is_file() and (info.sha256 is None or sha256_of(target) == info.sha256):
        return target
    parsed = urllib.parse.urlparse(info.url)
    with atomic_path(target) as tmp:
        try:
            if parsed.scheme in ("", "file"):
                source = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else info.url)
                if not source.is_file():
                    raise TlganError(f"{source}: weights file not found")
                shutil.copyfile(source, tmp)
            elif parsed.scheme in ("http", "https"):
                with urllib.request.urlopen(info.url, timeout=timeout) as response, open(tmp, "wb") as out:
                    total = int(response.headers.get("Content-Length") or 0) or None
                    with tqdm(total=total, unit="B", unit_scale=True, desc=info.name, disable=not progress) as bar:
                        for chunk in iter(lambda: response.read(1 << 20), b""):
                            out.write(chunk)
                            bar.update(len(chunk))
            else:
                raise TlganError(f"cannot fetch {info.url!r}: only https://, http:// and file:// URLs are supported")
        except OSError as exc:
            raise TlganError(f"could not download {info.url}: {exc}; check the address and your connection, "
                             f"or download it yourself and pass the local path") from None
        if info.sha256 is not None:
            got = sha256_of(tmp)
            if got != info.sha256:
                raise TlganError(f"{info.url}: SHA-256 mismatch (expected {info.sha256}, got {got}); "
                                 f"the download is corrupt or the file has changed; nothing was saved")
    log.info("fetched %s into %s", info.url, target)
    return target
