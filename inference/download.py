"""Fetch official SAM 2 checkpoints: progress, resume with HTTP Range, sha256 check, a clear offline error.

The base URL is Meta's download host unless MASKBENCH_MODEL_BASE_URL points elsewhere (a mirror inside a plant
network, or a test server on 127.0.0.1). A partial download is kept as `<file>.part` and continued with a Range
request; a server that ignores Range (200 instead of 206) restarts it from zero.

Expected sha256, first found: the caller's (`--sha256`), the catalogue's, or a `<file>.sha256` published next to the
file on the server. Meta publishes no checksums for these files, so the catalogue has none pinned; without any
expected value the file's sha256 is computed, reported and recorded (the import then verifies that the checkpoint
loads into its architecture, which a corrupted file does not).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inference.errors import DownloadError

DEFAULT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
ENV_BASE_URL = "MASKBENCH_MODEL_BASE_URL"
CHUNK = 1 << 20
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class CatalogEntry:
    filename: str
    config: str
    sha256: str | None = None


CATALOG: dict[str, CatalogEntry] = {
    "sam2.1_hiera_tiny": CatalogEntry("sam2.1_hiera_tiny.pt", "sam2.1_hiera_t"),
    "sam2.1_hiera_small": CatalogEntry("sam2.1_hiera_small.pt", "sam2.1_hiera_s"),
    "sam2.1_hiera_base_plus": CatalogEntry("sam2.1_hiera_base_plus.pt", "sam2.1_hiera_b+"),
    "sam2.1_hiera_large": CatalogEntry("sam2.1_hiera_large.pt", "sam2.1_hiera_l"),
}


def base_url() -> str:
    url = os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def catalog_entry(name: str) -> CatalogEntry:
    key = name.removesuffix(".pt")
    if key not in CATALOG:
        raise DownloadError(f"unknown model {name!r}; known: {', '.join(CATALOG)}")
    return CATALOG[key]


def _reason(exc: BaseException) -> str:
    r = getattr(exc, "reason", exc)
    if isinstance(r, socket.gaierror):
        return "host name does not resolve"
    if isinstance(r, ConnectionRefusedError):
        return "connection refused"
    if isinstance(r, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(r) or r.__class__.__name__


def _offline(url: str, exc: BaseException) -> DownloadError:
    host = urllib.request.urlparse(url).netloc
    return DownloadError(
        f"cannot reach {host} to download {url.rsplit('/', 1)[-1]} ({_reason(exc)}); are you offline? "
        f"Set {ENV_BASE_URL} to a reachable mirror, or copy the checkpoint here and run 'maskbench models add teacher PATH'"
    )


def fetch_sidecar_sha256(url: str, timeout: float = 10.0) -> str | None:
    """The hex digest in `<url>.sha256` if the server publishes one (sha256sum format or a bare digest)."""
    try:
        with urllib.request.urlopen(url + ".sha256", timeout=timeout) as resp:
            text = resp.read(4096).decode("ascii", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None
    m = re.search(r"\b([0-9a-fA-F]{64})\b", text)
    return m.group(1).lower() if m else None


def download_file(
    url: str, dest: Path | str, expected_sha256: str | None = None, progress: ProgressFn | None = None,
    timeout: float = 30.0,
) -> str:
    """Download `url` to `dest` (resuming `dest.part`), verify, rename into place; returns the sha256."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    expected = expected_sha256.lower() if expected_sha256 else None
    for attempt in range(2):  # the second attempt restarts from zero after a refused Range
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "maskbench"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have and attempt == 0:  # our part is not a prefix the server agrees with
                part.unlink()
                continue
            raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _offline(url, exc) from None
        with resp:
            status = getattr(resp, "status", 200)
            if have and status != 206:
                have = 0  # the server ignored Range: start over
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else 0
            mode = "ab" if have else "wb"
            done = have
            try:
                with open(part, mode) as fh:
                    if progress:
                        progress(done, total)
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        fh.write(block)
                        done += len(block)
                        if progress:
                            progress(done, total or done)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"download of {url} interrupted after {done} bytes ({_reason(exc)}); run the command again to resume"
                ) from None
            if total and done < total:
                raise DownloadError(
                    f"download of {url} interrupted after {done} of {total} bytes; run the command again to resume"
                )
        break
    digest = _sha256(part)
    if expected and digest != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"sha256 mismatch for {dest.name}: expected {expected}, got {digest}; the partial file was deleted, try again"
        )
    os.replace(part, dest)
    return digest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


@dataclass
class Downloaded:
    path: Path
    sha256: str
    verified_against: str | None  # "option" | "catalog" | "server" | None (nothing to compare with)
    config: str
    skipped: bool = False


def download_model(
    name: str, dest_dir: Path | str, expected_sha256: str | None = None, progress: ProgressFn | None = None,
) -> Downloaded:
    entry = catalog_entry(name)
    url = base_url() + entry.filename
    dest = Path(dest_dir) / entry.filename
    source = "option" if expected_sha256 else ("catalog" if entry.sha256 else None)
    expected = expected_sha256 or entry.sha256
    if expected is None:
        expected = fetch_sidecar_sha256(url)
        source = "server" if expected else None
    if dest.is_file() and expected and _sha256(dest) == expected.lower():
        return Downloaded(dest, expected.lower(), source, entry.config, skipped=True)
    digest = download_file(url, dest, expected, progress=progress)
    return Downloaded(dest, digest, source, entry.config)
