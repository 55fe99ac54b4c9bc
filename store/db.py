"""Database engine and migrations.

SQLite gets WAL (readers never block the reviewer's writes), foreign keys and a busy timeout so the GUI, a judge run
and a CLI predict can share one file. Any other SQLAlchemy URL (a shared PostgreSQL; plain postgresql:// means the
psycopg 3 driver) works too. Migrations run on open; on SQLite a copy of the file is kept before a migration touches
it, on PostgreSQL they run under an advisory lock so stations opening the store together migrate it once.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from store import integrity
from store.errors import UserError

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000
PG_MIGRATION_LOCK = 0x6D61736B  # "mask": the PostgreSQL advisory lock key that serialises migrations


class StoreError(UserError):
    pass


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def driver_url(url: str) -> str:
    """A plain postgresql:// (or postgres://) URL pointed at psycopg 3, the PostgreSQL driver maskbench installs.

    Why: users write plain postgresql:// URLs, and SQLAlchemy 2.0 maps those to psycopg2 (2.1 to psycopg), so the
    same project.yaml would open or fail depending on the SQLAlchemy release. Other URLs are returned unchanged."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        try:
            engine = create_engine(driver_url(url), pool_pre_ping=True)
        except (ImportError, NoSuchModuleError) as exc:  # a driver this install lacks: one line, not a traceback
            raise StoreError(f"no Python driver for the database URL scheme {url.split(':', 1)[0]!r} ({exc}); "
                             "PostgreSQL uses psycopg: pip install 'psycopg[binary]' (the standalone station "
                             "bundle carries SQLite only: install a shared-store station with scripts/setup.sh "
                             "station)") from None
    return engine


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", driver_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != "sqlite://" and ":memory:" not in url:
        return Path(url[len(prefix):])
    return None


def upgrade(engine: Engine, url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`, keeping a backup of an existing SQLite file first."""
    current = current_revision(engine)
    target = head_revision() if revision == "head" else revision
    if current == target:
        return
    path = sqlite_path(url)
    if current is not None and path is not None and path.exists():
        integrity.snapshot(path, path.with_name(f"{path.name}{integrity.MIGRATION_MARK}{current}"))
    cfg = alembic_config(url)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Stations opening one shared store at the same time: without a lock each runs the migration and all but
            # one fail ("alembic_version already exists"). One migrates; the others wait here, then find it done.
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})")
            if MigrationContext.configure(conn).get_current_revision() == target:
                return
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


class Database:
    """An open, migrated store. Use `session()` for a unit of work that commits or rolls back as a whole."""

    def __init__(self, url: str, migrate: bool = True) -> None:
        self.url = url
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            integrity.check_on_open(path)  # a damaged store is refused before anything writes to it
        self.engine = make_engine(url)
        if migrate:
            try:
                upgrade(self.engine, url)
            except Exception as exc:  # noqa: BLE001 - surfaced to users as one line
                raise StoreError(f"cannot open or migrate the database at {url}: {exc}") from exc
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        s = self._factory()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def integrity_check(self) -> str:
        if sqlite_path(self.url) is None:
            return "ok"
        with self.engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA integrity_check").scalar())

    def close(self) -> None:
        self.engine.dispose()
