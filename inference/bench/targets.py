"""Saved SSH benchmark targets (SshTarget rows). A target stores paths to a key file and a known_hosts file,
never key material; the host key must already be in that known_hosts file (it is never accepted on first use)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from inference.bench.errors import TargetConfigError, TargetNotFound
from store.db import Database
from store.schema import SshTarget

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int
    user: str
    key_file: str | None
    known_hosts: str | None
    remote_dir: str

    @classmethod
    def from_row(cls, row: SshTarget) -> Target:
        return cls(row.name, row.host, row.port, row.user, row.key_file, row.known_hosts, row.remote_dir)

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def _abs(path: str | Path | None, what: str, must_exist: bool) -> str | None:
    if path is None or str(path) == "":
        return None
    p = Path(path).expanduser().resolve()
    if must_exist and not p.is_file():
        raise TargetConfigError(f"{what} {p} does not exist")
    return str(p)


def add_target(
    db: Database,
    name: str,
    host: str,
    user: str,
    key_file: str | Path | None,
    known_hosts: str | Path | None,
    port: int = 22,
    remote_dir: str = "/tmp/maskbench",
    replace: bool = False,
) -> Target:
    if not _NAME_RE.match(name or ""):
        raise TargetConfigError(f"target name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    if not host:
        raise TargetConfigError("--host is required")
    if not user:
        raise TargetConfigError("--user is required")
    if not (0 < int(port) < 65536):
        raise TargetConfigError(f"--port {port} is not a TCP port")
    key = _abs(key_file, "key file", must_exist=True)
    kh = _abs(known_hosts, "known_hosts file", must_exist=True)
    if kh is None:
        raise TargetConfigError(
            "--known-hosts is required: host keys are checked against that file and never accepted silently "
            f"(create it with: ssh-keyscan -p {port} {host} > FILE, then compare the fingerprint with the device's)"
        )
    with db.session() as s:
        row = s.scalars(select(SshTarget).where(SshTarget.name == name)).first()
        if row is not None and not replace:
            raise TargetConfigError(f"a target named {name!r} exists already (use --replace to overwrite it)")
        if row is None:
            row = SshTarget(name=name)
            s.add(row)
        row.host = host
        row.port = int(port)
        row.user = user
        row.key_file = key
        row.known_hosts = kh
        row.remote_dir = remote_dir or "/tmp/maskbench"
        s.flush()
        return Target.from_row(row)


def list_targets(db: Database) -> list[Target]:
    with db.session() as s:
        return [Target.from_row(r) for r in s.scalars(select(SshTarget).order_by(SshTarget.name)).all()]


def get_target(db: Database, name: str) -> Target:
    with db.session() as s:
        row = s.scalars(select(SshTarget).where(SshTarget.name == name)).first()
        if row is None:
            names = ", ".join(t.name for t in list_targets(db)) or "none saved"
            raise TargetNotFound(f"no SSH target named {name!r} ({names}); add one with 'maskbench targets add'")
        return Target.from_row(row)


def remove_target(db: Database, name: str) -> None:
    with db.session() as s:
        row = s.scalars(select(SshTarget).where(SshTarget.name == name)).first()
        if row is None:
            raise TargetNotFound(f"no SSH target named {name!r}")
        s.delete(row)
