"""`maskbench` with no command: open the workbench window."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("gui")(gui)


def gui(project: Path = typer.Option(None, "--project", "-p", help="Project folder to open.")) -> None:
    """Open the workbench window (the same as running maskbench with no command)."""
    raise typer.Exit(launch(str(project) if project else None))


def launch(project: str | None) -> int:
    from app.window_main import run_gui

    return run_gui(project)
