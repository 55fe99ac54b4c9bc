"""A damaged SQLite store is refused on open with the newest backup named, and `db restore` brings it back."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.cli import main
from store import integrity
from store.ingest import ingest
from store.project import DB_NAME, Project
from store.errors import UserError
from store.schema import Sample


def _project_with_crops(root: Path, pairs: list, n: int) -> Path:
    data = root.parent / f"{root.name}-data"
    for img, mask, cls in pairs[:n]:
        (data / cls).mkdir(parents=True, exist_ok=True)
        for src in (img, mask):
            (data / cls / src.name).write_bytes(src.read_bytes())
    with Project.create(root) as p:
        ingest(p.db, data)
    return root


def _corrupt_page(store: Path, page: int = 3) -> None:
    """Random bytes over one page of the main file, as the issue's report did."""
    with open(store, "r+b") as fh:
        page_size = int.from_bytes(fh.read(18)[16:18], "big")
        fh.seek((page - 1) * page_size + 8)
        fh.write(os.urandom(page_size - 16))


def _count(root: Path) -> int:
    with Project.open(root) as p, p.db.session() as s:
        return int(s.scalar(select(func.count(Sample.id))))


def test_corrupted_page_is_refused_and_db_restore_brings_back_the_backup(
        tmp_path: Path, magnetic_tile_pairs: list, capsys: pytest.CaptureFixture[str]) -> None:
    root = _project_with_crops(tmp_path / "p", magnetic_tile_pairs, 12)
    store = root / DB_NAME
    assert main(["db", "backup", "--project", str(root)]) == 0
    assert "backed up to maskbench.sqlite.backup-" in capsys.readouterr().out
    assert main(["db", "check", "--project", str(root)]) == 0
    assert capsys.readouterr().out.startswith("maskbench.sqlite: ok")
    n = _count(root)
    assert n == 12 and store.stat().st_size > 4 * 4096  # the data spans the corrupted page
    _corrupt_page(store)
    assert integrity.quick_check(store)  # SQLite itself sees it

    with pytest.raises(integrity.DamagedStore, match=r"damaged .* newest sound backup is maskbench\.sqlite\.backup-"):
        Project.open(root)
    assert main(["queue", "--project", str(root)]) == 1  # any command: one line, nothing written
    err = capsys.readouterr().err
    assert err.startswith("error: the project store") and "db restore" in err and err.count("\n") == 1
    assert main(["db", "check", "--project", str(root)]) == 1
    assert "DAMAGED" in capsys.readouterr().out
    assert main(["db", "backup", "--project", str(root)]) == 1  # a damaged store is never backed up
    capsys.readouterr()

    assert main(["db", "restore", "--project", str(root)]) == 0
    out = capsys.readouterr().out
    assert "restored maskbench.sqlite.backup-" in out and "maskbench.sqlite.damaged-" in out
    assert not integrity.quick_check(store) and _count(root) == n
    assert list(root.glob("maskbench.sqlite.damaged-*"))  # the damaged file is kept, not deleted


def test_scheduled_backups_follow_project_yaml(tmp_path: Path) -> None:
    root = tmp_path / "p"
    Project.create(root, overrides={"backup": {"every_hours": 1.0, "keep": 2}}).close()
    store = root / DB_NAME
    assert integrity.backups(store) == []  # nothing to keep at creation
    Project.open(root).close()
    assert len(integrity.backups(store)) == 1
    Project.open(root).close()  # the newest is younger than an hour
    assert len(integrity.backups(store)) == 1
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    assert integrity.due(store, 1.0, now=later) and not integrity.due(store, 0, now=later)
    for i in range(3):
        integrity.backup(store, now=later + dt.timedelta(seconds=i))
    assert [p.name for p in integrity.prune(store, 2)]  # the oldest go
    kept = integrity.backups(store)
    assert len(kept) == 2 and all(not integrity.quick_check(b.path) for b in kept)


def test_restore_refuses_a_damaged_backup_and_a_project_without_backups(tmp_path: Path) -> None:
    root = tmp_path / "p"
    Project.create(root).close()
    store = root / DB_NAME
    with pytest.raises(UserError, match="no sound backup"):
        integrity.restore(store)
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"not a database" * 100)
    with pytest.raises(integrity.DamagedStore, match="damaged too"):
        integrity.restore(store, bad)
    assert not integrity.quick_check(store)  # untouched
