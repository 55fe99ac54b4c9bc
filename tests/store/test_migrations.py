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


def test_migrations_match_the_models(tmp_path: Path) -> None:
    """A store migrated to head has exactly the schema the ORM models declare (no model change without a migration)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from store.schema import Base

    db = Database(f"sqlite:///{tmp_path / 'm.sqlite'}")
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    db.close()


def test_0004_adds_box_and_mask_prompt_to_predictions(tmp_path: Path) -> None:
    """Predictions stored before 0004 keep their points and get no box / mask prompt (nor, from 0005, more than one
    view); a downgrade drops the columns."""
    path = tmp_path / "p.sqlite"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    upgrade(engine, url, "0003")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO samples (path, sha256, width, height, defect_class, created_at) "
            "VALUES ('/data/a.jpg', :sha, 64, 32, 'crack', '2026-01-01 00:00:00')"), {"sha": "cd" * 32})
        conn.execute(text(
            "INSERT INTO models (name, kind, architecture, backend, checkpoint_path, sha256, active, meta, created_at) "
            "VALUES ('t', 'teacher', 'sam2.1_hiera_t', 'torch', '-', :sha, 1, '{}', '2026-01-01 00:00:00')"),
            {"sha": "ef" * 32})
        conn.execute(text(
            "INSERT INTO masks (sample_id, source, rle, area, created_at) "
            "VALUES (1, 'teacher', '{\"size\": [32, 64], \"counts\": \"0\"}', 0, '2026-01-01 00:00:00')"))
        conn.execute(text(
            "INSERT INTO predictions (sample_id, model_id, mask_id, points, labels, prompt_source, score, created_at) "
            "VALUES (1, 1, 1, '[[3, 4]]', '[1]', 'saliency', 0.5, '2026-01-01 00:00:00')"))
    engine.dispose()

    db = Database(url)
    assert current_revision(db.engine) == head_revision()
    with db.engine.connect() as conn:
        row = conn.execute(text("SELECT points, box, mask_prompt_id, views FROM predictions")).one()
    assert row == ('[[3, 4]]', None, None, 1)  # and 0005: a prediction made before flip averaging is one view
    fks = {tuple(fk["constrained_columns"]): fk["referred_table"]
           for fk in inspect(db.engine).get_foreign_keys("predictions")}
    assert fks[("mask_prompt_id",)] == "masks"
    db.close()
    from alembic import command

    from store.db import alembic_config

    engine = make_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    cols = {c["name"] for c in inspect(engine).get_columns("predictions")}
    assert "box" not in cols and "mask_prompt_id" not in cols and "views" not in cols
    with engine.connect() as conn:
        assert conn.execute(text("SELECT points FROM predictions")).scalar() == "[[3, 4]]"
    engine.dispose()
