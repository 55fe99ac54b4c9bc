"""Store commands: `db check | backup | restore`.

They work on the project's SQLite file without opening the project, because the project refuses to open a damaged
store (store.integrity): `db restore` is how a station gets back to work. A PostgreSQL store is checked and backed
up with the server's own tools (pg_dump, pg_amcheck); these commands say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

db_app = typer.Typer(help="Check, back up and restore a project's SQLite store.", no_args_is_help=True,
                     rich_markup_mode=None)


def register(app: typer.Typer) -> None:
    db_app.command("check")(check)
    db_app.command("backup")(backup)
    db_app.command("restore")(restore)
    app.add_typer(db_app, name="db")


def _store(project: Path) -> Path:
    from store import config as config_mod
    from store.db import sqlite_path
    from store.errors import UserError
    from store.project import CONFIG_NAME, Project

    root = project.expanduser().resolve()
    if not (root / CONFIG_NAME).is_file():
        raise UserError(f"{root} is not a maskbench project (no {CONFIG_NAME})")
    url = Project.database_url(root, config_mod.load(root / CONFIG_NAME))
    path = sqlite_path(url)
    if path is None:
        raise UserError(f"the store is {url.split('://')[0]}, not SQLite: use the server's tools (pg_dump, pg_amcheck)")
    return path


def check(project: Path = typer.Option(..., "--project", "-p", help="Project folder.")) -> None:
    """PRAGMA quick_check of the store, and its backups."""
    from store import integrity
    from store.errors import UserError

    store = _store(project)
    if not store.is_file():
        raise UserError(f"no store at {store}")
    problems = integrity.quick_check(store)
    typer.echo(f"{store.name}: " + ("ok" if not problems else f"DAMAGED: {'; '.join(problems[:5])}"))
    for b in integrity.backups(store):
        state = "ok" if not integrity.quick_check(b.path) else "damaged"
        typer.echo(f"  backup {b.path.name}  {b.made:%Y-%m-%d %H:%M} UTC  {b.path.stat().st_size / 1e6:.2f} MB  {state}")
    if problems:
        raise typer.Exit(1)


def backup(project: Path = typer.Option(..., "--project", "-p", help="Project folder.")) -> None:
    """A checked snapshot of the store next to it (refused when the store itself is damaged)."""
    from store import integrity

    dst = integrity.backup(_store(project))
    typer.echo(f"backed up to {dst.name} ({dst.stat().st_size / 1e6:.2f} MB, checked)")


def restore(
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
    source: Optional[Path] = typer.Option(None, "--from", help="Backup file (default: the newest sound one)."),
) -> None:
    """Put a backup in the store's place; the current file is moved aside, never deleted."""
    from store import integrity

    used, moved = integrity.restore(_store(project), source)
    typer.echo(f"restored {used.name}" + (f"; the previous file is kept as {moved.name}" if moved else ""))
