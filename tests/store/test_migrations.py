"""Migrations: a store created at the first revision upgrades to head with its data intact and a backup kept."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from store.db import Database, current_revision, head_revision, make_engine, upgrade


def test_upgrade_from_first_revision_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine, url, "0001")
    assert current_revision(engine) == "0001"
    assert "ssh_targets" not in inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO samples (path, sha256, width, height, defect_class, created_at) "
            "VALUES ('/data/a.jpg', :sha, 640, 320, 'crack', '2026-01-01 00:00:00')"), {"sha": "ab" * 32})
        conn.execute(text(
            "INSERT INTO masks (sample_id, source, rle, area, created_at) "
            "VALUES (1, 'ground_truth', '{\"size\": [320, 640], \"counts\": \"0\"}', 0, '2026-01-01 00:00:00')"))
    engine.dispose()

    db = Database(url)  # opening migrates
    assert current_revision(db.engine) == head_revision() != "0001"
    assert "ssh_targets" in inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT path, sha256, width, defect_class FROM samples")).one() == (
            "/data/a.jpg", "ab" * 32, 640, "crack")
        assert conn.execute(text("SELECT count(*) FROM masks")).scalar() == 1
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    backup = tmp_path / "old.sqlite.bak-0001"
    assert backup.exists()
    check = make_engine(f"sqlite:///{backup}")
    with check.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM samples")).scalar() == 1
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    db.close()


def test_open_at_head_takes_no_backup(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    Database(url).close()
    Database(url).close()
    assert not list(tmp_path.glob("*.bak-*"))
