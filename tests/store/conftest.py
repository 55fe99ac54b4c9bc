"""Store fixtures: a real PostgreSQL server for the shared-store tests (tests/store/test_postgres*.py).

One server per test session (initdb + start is ~2 s), one fresh database per test, so tests never see each other's
rows. Without PostgreSQL binaries the fixture FAILS with the install command: these tests are part of CI, and a
skipped shared-store test would hide exactly the stations-sharing-a-server setup they exist for.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pg_server import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        missing = str(exc)
    else:
        missing = ""
    if missing:  # outside the except block: the report shows this one line, not a chained traceback
        pytest.fail(missing, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL (postgresql+psycopg://) of a new, empty database on the session's server."""
    return postgres_server.create_database(f"mb_{uuid.uuid4().hex[:12]}")
