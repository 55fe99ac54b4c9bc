"""`models download` against a real HTTP server on 127.0.0.1 (never the internet): progress, Range resume,
sha256 verification, and a clear error when the host cannot be reached."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from app.cli import main
from inference.download import CATALOG, ENV_BASE_URL, download_file, download_model
from inference.errors import DownloadError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MB, not a multiple of the chunk size
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class _Server:
    """Serves PAYLOAD for any *.pt path and its sha256 for *.pt.sha256; honours Range; can cut a response short."""

    def __init__(self, publish_sha: str | None = SHA) -> None:
        self.requests: list[dict[str, str | None]] = []
        self.cut_after: int | None = None
        self.ignore_range = False
        self.publish_sha = publish_sha
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append({"path": self.path, "range": self.headers.get("Range")})
                if self.path.endswith(".sha256"):
                    if outer.publish_sha is None:
                        self.send_error(404)
                        return
                    body = f"{outer.publish_sha}  {self.path.rsplit('/', 1)[-1][:-7]}\n".encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if not self.path.endswith(".pt"):
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and not outer.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.cut_after is not None:
                    self.wfile.write(body[: outer.cut_after])
                    outer.cut_after = None
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_verifies_against_server_checksum(tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple[int, int]] = []
    with _Server() as srv:
        monkeypatch.setenv(ENV_BASE_URL, srv.url)
        got = download_model("sam2.1_hiera_small", tmp_path, progress=lambda d, t: seen.append((d, t)))
        assert got.path == tmp_path / CATALOG["sam2.1_hiera_small"].filename
        assert got.path.read_bytes() == PAYLOAD and got.sha256 == SHA and got.verified_against == "server"
        assert got.config == "sam2.1_hiera_s"
        assert seen[-1] == (len(PAYLOAD), len(PAYLOAD)) and len(seen) > 2
        again = download_model("sam2.1_hiera_small", tmp_path)  # already there and verified: no body fetched
        assert again.skipped
        assert [r["path"] for r in srv.requests].count("/models/sam2.1_hiera_small.pt") == 1


def test_interrupted_download_resumes_with_range(tmp_path: Path) -> None:
    dest = tmp_path / "m.pt"
    with _Server() as srv:
        srv.cut_after = 300_000
        with pytest.raises(DownloadError, match="interrupted after 300000"):
            download_file(srv.url + "m.pt", dest, expected_sha256=SHA)
        assert not dest.exists() and (tmp_path / "m.pt.part").stat().st_size == 300_000
        digest = download_file(srv.url + "m.pt", dest, expected_sha256=SHA)
        assert digest == SHA and dest.read_bytes() == PAYLOAD and not (tmp_path / "m.pt.part").exists()
        assert srv.requests[-1]["range"] == "bytes=300000-"


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path) -> None:
    dest = tmp_path / "m.pt"
    (tmp_path / "m.pt.part").write_bytes(PAYLOAD[:1000])
    with _Server() as srv:
        srv.ignore_range = True
        assert download_file(srv.url + "m.pt", dest, expected_sha256=SHA) == SHA
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_is_refused(tmp_path: Path, monkeypatch) -> None:
    with _Server(publish_sha="0" * 64) as srv:
        monkeypatch.setenv(ENV_BASE_URL, srv.url)
        with pytest.raises(DownloadError, match="sha256 mismatch"):
            download_model("sam2.1_hiera_tiny", tmp_path)
        assert not list(tmp_path.iterdir())  # neither the file nor a .part is left
        got = download_model("sam2.1_hiera_tiny", tmp_path, expected_sha256=SHA)  # --sha256 wins
        assert got.verified_against == "option"


def test_no_published_checksum_is_recorded(tmp_path: Path, monkeypatch) -> None:
    with _Server(publish_sha=None) as srv:
        monkeypatch.setenv(ENV_BASE_URL, srv.url)
        got = download_model("sam2.1_hiera_large", tmp_path)
    assert got.sha256 == SHA and got.verified_against is None


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_cli_download_and_offline_message(tmp_path: Path, monkeypatch, capsys) -> None:
    with _Server() as srv:
        monkeypatch.setenv(ENV_BASE_URL, srv.url)
        assert main(["models", "download", "sam2.1_hiera_tiny", "--out", str(tmp_path / "a")]) == 0
        out = capsys.readouterr().out
        assert "downloaded" in out and SHA in out and "matches the server" in out
    monkeypatch.setenv(ENV_BASE_URL, f"http://127.0.0.1:{_closed_port()}/")
    assert main(["models", "download", "sam2.1_hiera_tiny", "--out", str(tmp_path / "b")]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "cannot reach 127.0.0.1" in err[0] and "offline" in err[0] and ENV_BASE_URL in err[0]
    assert main(["models", "download", "sam9_hiera_huge", "--out", str(tmp_path / "c")]) == 1
    assert "unknown model" in capsys.readouterr().err
