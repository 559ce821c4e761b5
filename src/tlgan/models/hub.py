"""Fetching weight files for real users: a URL, a SHA-256 to check, a local cache.

Works with ``https://`` and ``file://`` URLs (and plain paths), through
``torch.hub.download_url_to_file``. A download goes to a temporary file and is renamed into
the cache only after its hash matched, so an interrupted or tampered download never lands
under the final name.
"""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from tlgan.errors import TlganError
from tlgan.io import atomic_path, cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightsInfo:
    """Where a weights file lives and what it must hash to."""

    url: str
    sha256: str | None = None
    filename: str | None = None

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


def fetch(info: WeightsInfo, cache: Path | None = None, progress: bool = True) -> Path:
    """Return a local path to ``info``'s file, downloading it into ``cache`` if needed.

    ``https://``, ``http://`` and ``file://`` URLs (and plain paths) are fetched with
    ``torch.hub.download_url_to_file``, which checks ``info.sha256`` while it reads; the file
    lands under its name in ``cache`` (default ``$TLGAN_CACHE/weights``) only once whole and
    checked. A cached file whose hash matches is not fetched again. Raises TlganError for an
    unsupported scheme, a missing local file, a failed download, or a hash mismatch (nothing is
    kept then).
    """
    from torch.hub import download_url_to_file

    cache = Path(cache) if cache else default_cache()
    target = cache / info.name
    if target.is_file() and (info.sha256 is None or sha256_of(target) == info.sha256):
        return target
    parsed = urllib.parse.urlparse(info.url)
    url = info.url
    if parsed.scheme in ("", "file"):
        source = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else info.url)
        if not source.is_file():
            raise TlganError(f"{source}: weights file not found")
        url = source.resolve().as_uri()
    elif parsed.scheme not in ("http", "https"):
        raise TlganError(f"cannot fetch {info.url!r}: only https://, http:// and file:// URLs are supported")
    with atomic_path(target) as tmp:
        try:
            download_url_to_file(url, str(tmp), hash_prefix=info.sha256, progress=progress)
        except OSError as exc:
            raise TlganError(
                f"could not download {info.url}: {exc}; check the address and your connection, "
                f"or download it yourself and pass the local path"
            ) from None
        except RuntimeError as exc:  # download_url_to_file's hash check
            got = re.search(r'got "([0-9a-f]+)"', str(exc))
            if "invalid hash value" not in str(exc):
                raise
            raise TlganError(
                f"{info.url}: SHA-256 mismatch (expected {info.sha256}, got {got.group(1) if got else '?'}); "
                f"the download is corrupt or the file has changed; nothing was saved"
            ) from None
    log.info("fetched %s into %s", info.url, target)
    return target


HF_PREFIX = "hf://"


def parse_hf_spec(spec: str) -> tuple:
    """``hf://OWNER/REPO/PATH[@REVISION]`` -> (repo_id, filename, revision or None)."""
    body = spec[len(HF_PREFIX) :] if spec.startswith(HF_PREFIX) else spec
    body, _, revision = body.partition("@")
    parts = [p for p in body.split("/") if p]
    if len(parts) < 3:
        raise TlganError(
            f"cannot read {spec!r} as a Hub file; write it as hf://OWNER/REPO/PATH[@REVISION], "
            f"e.g. hf://me/my-gan/network.pkl"
        )
    return "/".join(parts[:2]), "/".join(parts[2:]), revision or None


def hf_file(spec: str) -> Path:
    """The local path of a Hugging Face Hub file, downloaded into the Hub's standard cache if needed.

    Uses ``huggingface_hub.hf_hub_download``, so ``HF_HOME`` / ``HF_HUB_CACHE`` choose the cache
    and ``HF_HUB_OFFLINE=1`` serves a cached file without any network.
    """
    repo_id, filename, revision = parse_hf_spec(spec)
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:
        raise TlganError("hf:// specs need the huggingface_hub package: pip install 'tlgan[hub]'") from None
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except LocalEntryNotFoundError:
        raise TlganError(
            f"{spec}: not in the Hub cache and it cannot be downloaded now (offline, or no network); "
            f"run once with network access, or unset HF_HUB_OFFLINE"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise TlganError(
            f"{spec}: could not fetch {filename} from {repo_id} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); check the owner, repository, path and revision"
        ) from None
