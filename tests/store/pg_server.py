"""A real, throw-away PostgreSQL server for the shared-store tests: initdb into a temp folder, trust auth on
127.0.0.1 only, a free port, stopped (fast shutdown) and deleted at the end.

Why this shape: the tests run as root in CI and initdb refuses root, so the server's files belong to an unprivileged
user (the `postgres` system user the Debian package creates, else `nobody`) and initdb/pg_ctl run as that user
(subprocess's user=/group=, no sudo needed). The data folder is made with mkdtemp under the system temp folder,
because pytest's tmp_path sits below a root-only folder the server user could not enter. fsync is off: the tests are
about SQL semantics and concurrency, not surviving a power cut, and a synced initdb costs seconds on 2 cores. The
server's time zone is +05:30 (Asia/Kolkata), not UTC: a shared server rarely runs in UTC, and an offset makes a
naive/aware or local/UTC mix-up in the store visible.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPERUSER = "postgres"  # the role initdb creates; trust auth, so no password


class PostgresUnavailable(RuntimeError):
    pass


def find_bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres: `pg_config --bindir` first, then Debian's layout (newest
    version), then PATH. Raises PostgresUnavailable (the tests fail, they never skip) naming the install step."""
    candidates: list[Path] = []
    if os.environ.get("MASKBENCH_PG_BINDIR"):
        candidates.append(Path(os.environ["MASKBENCH_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                    if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += [Path(p) for p in debian]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for c in candidates:
        if all((c / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return c
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found via pg_config --bindir, "
        "/usr/lib/postgresql/*/bin or PATH; install them with 'bash scripts/setup.sh test' (apt-get install "
        "postgresql, as root) or set MASKBENCH_PG_BINDIR. The PostgreSQL store tests run in CI and are not skipped.")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root; None when we are not root (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists to run the "
                              "PostgreSQL server as (initdb refuses root)")


@dataclass
class PostgresServer:
    """One running server. `url(db)` is a SQLAlchemy URL (postgresql+psycopg://) for a database on it."""

    bindir: Path
    root: Path
    port: int
    user: pwd.struct_passwd | None
    databases: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        if self.user is not None:
            env["HOME"] = str(self.root)
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=str(self.root), check=False, **kw)

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = find_bindir()
        user = _server_user()
        root = Path(tempfile.mkdtemp(prefix="maskbench-pg-"))
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        server = cls(bindir=bindir, root=root, port=0, user=user)
        init = server._run("initdb", "-D", str(server.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                           "--no-sync", "--locale=C")
        if init.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise PostgresUnavailable(f"initdb failed ({init.returncode}): {init.stderr.strip() or init.stdout}")
        with open(server.data / "pg_hba.conf", "w", encoding="utf-8") as f:  # loopback TCP only, no password
            f.write("host all all 127.0.0.1/32 trust\n")
        last = ""
        for _ in range(5):  # a port picked free can be taken before the server binds it: pick another
            server.port = free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -c port={server.port} -c unix_socket_directories='' "
                    "-c fsync=off -c full_page_writes=off -c max_connections=200 -c timezone=Asia/Kolkata")
            st = server._run("pg_ctl", "-D", str(server.data), "-l", str(server.log), "-w", "-t", "60", "-o", opts,
                             "start")
            if st.returncode == 0:
                return server
            last = server.log.read_text(encoding="utf-8", errors="replace")[-2000:] if server.log.exists() else ""
            last = f"{st.stdout}{st.stderr}\n{last}"
            server._run("pg_ctl", "-D", str(server.data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"the PostgreSQL server did not start: {last.strip()}")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE) on the maintenance database."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        self.admin(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
