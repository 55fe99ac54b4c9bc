"""A project's SQLite store: integrity check, backups and restore.

Why: SQLite opens a file with a corrupted page and keeps answering queries until one touches the page, so an
inspection station could write verdicts into a damaged store for days. The store is checked (`PRAGMA quick_check`,
linear in the file's size, milliseconds for a project) every time it is opened; a damaged one is refused with the
newest good backup named. Backups use SQLite's online backup API (a consistent snapshot even while WAL pages are
not yet checkpointed) and are checked themselves; a restore never deletes the damaged file, it moves it aside.

Backups sit next to the store: `maskbench.sqlite.backup-YYYYmmdd-HHMMSS-micro` (made by `maskbench db backup` and on the
schedule of project.yaml's `backup` section) and `maskbench.sqlite.bak-<revision>` (made before a migration).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from store.errors import UserError

BACKUP_MARK = ".backup-"
MIGRATION_MARK = ".bak-"


class DamagedStore(UserError):
    pass


@dataclass(frozen=True)
class Backup:
    path: Path
    made: dt.datetime  # file modification time, UTC


def _ro_uri(path: Path) -> str:
    """A read-only SQLite URI (as_uri escapes spaces, '?' and '#' in folder names)."""
    return Path(path).resolve().as_uri() + "?mode=ro"


def quick_check(path: Path) -> list[str]:
    """Problems SQLite finds in the file ([] when it is sound). Read-only: never changes the file."""
    try:
        conn = sqlite3.connect(_ro_uri(path), uri=True)
    except sqlite3.Error as exc:
        return [str(exc)]
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        return [str(exc)]
    finally:
        conn.close()
    found = [line.strip() for r in rows for line in str(r[0]).splitlines()
             if line.strip() and not line.startswith("***")]  # one problem per line; drop "*** in database main ***"
    return [] if found == ["ok"] else found


def backups(store: Path) -> list[Backup]:
    """Backups of `store`, newest first (both kinds)."""
    found = []
    for p in store.parent.glob(f"{store.name}.*"):
        suffix = p.name[len(store.name):]
        if suffix.startswith((BACKUP_MARK, MIGRATION_MARK)) and not suffix.endswith((".tmp", "-wal", "-shm")):
            found.append(Backup(p, dt.datetime.fromtimestamp(p.stat().st_mtime, dt.timezone.utc)))
    return sorted(found, key=lambda b: (b.made, b.path.name), reverse=True)


def newest_good_backup(store: Path) -> Backup | None:
    return next((b for b in backups(store) if not quick_check(b.path)), None)


def snapshot(src: Path, dst: Path) -> None:
    """SQLite online backup of src into dst (written to a temporary name first, then renamed)."""
    tmp = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")  # two processes backing up at once never share a file
    s = sqlite3.connect(_ro_uri(src), uri=True)
    d = sqlite3.connect(tmp)
    try:
        s.backup(d)
    finally:
        d.close()
        s.close()
    tmp.replace(dst)


def backup(store: Path, now: dt.datetime | None = None) -> Path:
    """A checked snapshot of a sound store; refuses to back up a damaged one (it would hide the good backups)."""
    if not store.is_file():
        raise UserError(f"no SQLite store at {store}")
    problems = quick_check(store)
    if problems:
        raise DamagedStore(f"{store.name} is damaged ({problems[0]}); not backed up. {_restore_hint(store)}")
    stamp = (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y%m%d-%H%M%S-%f")
    dst = store.with_name(f"{store.name}{BACKUP_MARK}{stamp}")
    snapshot(store, dst)
    problems = quick_check(dst)
    if problems:
        dst.unlink()
        raise UserError(f"the backup of {store.name} did not pass its own check ({problems[0]}); nothing kept")
    return dst


def prune(store: Path, keep: int) -> list[Path]:
    """Remove scheduled backups beyond the newest `keep` (migration backups are never removed here)."""
    scheduled = [b for b in backups(store) if BACKUP_MARK in b.path.name]
    removed = [b.path for b in scheduled[max(keep, 1):]]
    for p in removed:
        p.unlink()
        for side in ("-wal", "-shm"):  # left by the read-only check of a WAL-mode copy
            p.with_name(p.name + side).unlink(missing_ok=True)
    return removed


def restore(store: Path, source: Path | None = None) -> tuple[Path, Path | None]:
    """Put a backup in the store's place (the newest good one unless `source` is given). The current file, damaged
    or not, and its -wal/-shm are moved aside to `<name>.damaged-<stamp>`, never deleted. Returns (backup used,
    where the old file went)."""
    chosen = source
    if chosen is None:
        good = newest_good_backup(store)
        if good is None:
            raise UserError(f"no sound backup of {store.name} next to it in {store.parent}")
        chosen = good.path
    if not chosen.is_file():
        raise UserError(f"no backup at {chosen}")
    problems = quick_check(chosen)
    if problems:
        raise DamagedStore(f"the backup {chosen.name} is damaged too ({problems[0]}); choose another with --from")
    moved = None
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    if store.exists():
        moved = store.with_name(f"{store.name}.damaged-{stamp}")
        store.replace(moved)
    for side in ("-wal", "-shm"):
        extra = store.with_name(store.name + side)
        if extra.exists():
            extra.replace(store.with_name(f"{store.name}.damaged-{stamp}{side}"))
    snapshot(chosen, store)
    return chosen, moved


def _restore_hint(store: Path) -> str:
    good = newest_good_backup(store)
    if good is None:
        return "No sound backup was found next to it."
    return (f"The newest sound backup is {good.path.name} ({good.made:%Y-%m-%d %H:%M} UTC): "
            f"restore it with 'maskbench db restore --project {store.parent}'.")


def check_on_open(store: Path) -> None:
    """Raise DamagedStore with one readable line when an existing store fails its check."""
    if not store.is_file():
        return
    problems = quick_check(store)
    if problems:
        raise DamagedStore(f"the project store {store} is damaged ({problems[0]}); it was not opened, so nothing "
                           f"more is written to it. {_restore_hint(store)}")


def due(store: Path, every_hours: float, now: dt.datetime | None = None) -> bool:
    """A scheduled backup is due when none is younger than `every_hours` (0 or less: never)."""
    if every_hours <= 0 or not store.is_file():
        return False
    scheduled = [b for b in backups(store) if BACKUP_MARK in b.path.name]
    if not scheduled:
        return True
    age = (now or dt.datetime.now(dt.timezone.utc)) - scheduled[0].made
    return age >= dt.timedelta(hours=every_hours)
