"""SSH to a benchmark target with paramiko: host keys checked against the target's own known_hosts file with
RejectPolicy (an unknown or changed key is refused, nothing is ever written to known_hosts), key-file
authentication only, and every failure turned into one clear line."""

from __future__ import annotations

import hashlib
import logging
import posixpath
import shlex
import socket
import time
from pathlib import Path
from typing import Any, Callable

from inference.bench.errors import (
    HostKeyChanged,
    HostUnreachable,
    KeyFileError,
    KeyRefused,
    RemoteTimeout,
    SshError,
    SshTimeout,
    TargetConfigError,
    UnknownHostKey,
)
from inference.bench.targets import Target

log = logging.getLogger("maskbench.bench.ssh")

LineFn = Callable[[str], None]


def _fingerprint(key: Any) -> str:
    import base64

    digest = hashlib.sha256(key.asbytes()).digest()
    return f"{key.get_name()} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


def _load_key(path: str) -> Any:
    import paramiko

    p = Path(path)
    if not p.is_file():
        raise KeyFileError(f"key file {p} does not exist")
    try:
        return paramiko.PKey.from_path(str(p))
    except paramiko.PasswordRequiredException:
        raise KeyFileError(f"key file {p} is protected by a passphrase; use a key without one for benchmark targets") from None
    except PermissionError:
        raise KeyFileError(f"key file {p} is not readable") from None
    except (paramiko.SSHException, ValueError, OSError) as exc:
        raise KeyFileError(f"key file {p} is not a usable private key ({exc})") from None


class Remote:
    """An open SSH connection. Use as a context manager: `with Remote.connect(target) as r: ...`."""

    def __init__(self, client: Any, target: Target) -> None:
        self.client = client
        self.target = target
        self._sftp: Any = None

    # --- connecting ---

    @classmethod
    def connect(cls, target: Target, timeout: float = 15.0) -> Remote:
        import paramiko

        if not target.known_hosts:
            raise TargetConfigError(f"target {target.name} has no known_hosts file; host keys are never accepted silently")
        kh = Path(target.known_hosts)
        if not kh.is_file():
            raise TargetConfigError(f"known_hosts file {kh} of target {target.name} does not exist")
        key = _load_key(target.key_file) if target.key_file else None
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(kh))
        except (OSError, paramiko.SSHException) as exc:
            raise TargetConfigError(f"cannot read known_hosts file {kh}: {exc}") from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        where = f"{target.name} ({target.host}:{target.port})"
        try:
            client.connect(
                target.host,
                port=target.port,
                username=target.user,
                pkey=key,
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyChanged(
                f"host key of {where} does not match {kh}: the device offers {_fingerprint(exc.key)}, known is "
                f"{_fingerprint(exc.expected_key)}; refused. If the device was reinstalled, check the new key on its "
                f"console and replace its line in {kh}"
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise KeyRefused(
                f"{where} refused the key {target.key_file or '(none)'} for user {target.user}"
            ) from None
        except paramiko.ssh_exception.NoValidConnectionsError as exc:
            client.close()
            reason = "; ".join(sorted({e.strerror or str(e) for e in exc.errors.values()})) or "connection refused"
            raise HostUnreachable(f"cannot reach {where}: {reason}") from None
        except socket.gaierror as exc:
            client.close()
            raise HostUnreachable(f"cannot resolve host {target.host} of target {target.name}: {exc.strerror}") from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise SshTimeout(f"{where} did not answer within {timeout:g} s") from None
        except paramiko.SSHException as exc:
            client.close()
            msg = str(exc)
            if "not found in known_hosts" in msg:
                raise UnknownHostKey(
                    f"host key of {where} is not in {kh}; refused. Add it after checking its fingerprint: "
                    f"ssh-keyscan -p {target.port} {target.host} >> {kh}"
                ) from None
            if "banner" in msg.lower():
                raise SshTimeout(f"{where} accepted the connection but no SSH server answered ({msg})") from None
            raise SshError(f"SSH to {where} failed: {msg}") from None
        except OSError as exc:
            client.close()
            raise HostUnreachable(f"cannot reach {where}: {exc.strerror or exc}") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        return cls(client, target)

    def close(self) -> None:
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # noqa: BLE001
                pass
        self.client.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- commands ---

    def run(
        self,
        command: str,
        timeout: float = 60.0,
        on_line: LineFn | None = None,
        what: str = "command",
    ) -> tuple[int, str]:
        """Run `command` through the remote shell, stdout and stderr merged, streaming each line to `on_line`.
        Raises RemoteTimeout after `timeout` seconds (the channel is closed; see `timed` for killing the remote
        process too)."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"the connection to {self.target.name} was lost")
        chan = transport.open_session(timeout=30)
        chan.set_combine_stderr(True)
        chan.settimeout(0.2)
        chan.exec_command(command)
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        pending = b""
        try:
            while True:
                try:
                    data = chan.recv(65536)
                except socket.timeout:
                    data = None
                if data:
                    chunks.append(data)
                    if on_line:
                        pending += data
                        *lines, pending = pending.split(b"\n")
                        for ln in lines:
                            on_line(ln.decode("utf-8", "replace").rstrip("\r"))
                elif data == b"":  # EOF: the remote command closed its output
                    break
                if time.monotonic() > deadline:
                    raise RemoteTimeout(f"{what} on {self.target.name} did not finish within {timeout:g} s")
                if not transport.is_active():
                    raise SshError(f"the connection to {self.target.name} was lost during {what}")
            while not chan.exit_status_ready():
                if time.monotonic() > deadline:
                    raise RemoteTimeout(f"{what} on {self.target.name} did not finish within {timeout:g} s")
                time.sleep(0.02)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        if on_line and pending:
            on_line(pending.decode("utf-8", "replace").rstrip("\r"))
        return status, b"".join(chunks).decode("utf-8", "replace")

    def timed(self, command: str, timeout: float, on_line: LineFn | None = None, what: str = "command",
              cwd: str | None = None) -> tuple[int, str]:
        """Like `run` for one program and its arguments (`command`, already shell-quoted), but the remote side
        enforces the time limit as well (coreutils `timeout`, when the device has it), so a hung trtexec does not
        keep the GPU busy after we give up."""
        limit = max(1, int(round(timeout)))
        wrapped = (
            f"if command -v timeout >/dev/null 2>&1; then exec timeout -k 5 {limit} {command}; "
            f"else exec {command}; fi"
        )
        if cwd:
            wrapped = f"cd {shlex.quote(cwd)} && {wrapped}"
        status, out = self.run(f"sh -c {shlex.quote(wrapped)}", timeout=timeout + 15, on_line=on_line, what=what)
        if status == 124:
            raise RemoteTimeout(f"{what} on {self.target.name} did not finish within {limit} s and was stopped")
        return status, out

    # --- files ---

    @property
    def sftp(self) -> Any:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def makedirs(self, remote_dir: str) -> None:
        status, out = self.run(f"mkdir -p {shlex.quote(remote_dir)}", timeout=30, what="mkdir")
        if status != 0:
            raise SshError(f"cannot create {remote_dir} on {self.target.name}: {out.strip()[:200]}")

    def upload(self, local: Path, remote_dir: str, progress: Callable[[int, int], None] | None = None) -> str:
        """Copy `local` into remote_dir as '<sha256 prefix>-<name>'; a file already there with that name and
        size is reused (re-runs of the same export upload nothing)."""
        h = hashlib.sha256()
        with local.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        remote = posixpath.join(remote_dir, f"{h.hexdigest()[:12]}-{local.name}")
        size = local.stat().st_size
        try:
            if self.sftp.stat(remote).st_size == size:
                return remote
        except OSError:
            pass
        tmp = remote + ".part"
        self.sftp.put(str(local), tmp, callback=progress)
        try:
            self.sftp.posix_rename(tmp, remote)
        except OSError:  # servers without the posix-rename extension
            try:
                self.sftp.remove(remote)
            except OSError:
                pass
            self.sftp.rename(tmp, remote)
        return remote
