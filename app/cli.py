"""The `maskbench` command line. `python main.py` with no arguments opens the workbench.

Every command lives in app/commands/<area>.py and registers itself here. Heavy libraries (torch, Qt, LiteLLM)
are imported inside the commands so `--help` is instant and a station install without torch still runs.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Optional

import typer

from app import logs

COMMAND_MODULES = [
    "app.commands.project",
    "app.commands.gui",
    "app.commands.train",
    "app.commands.review",
    "app.commands.bench",
    "app.commands.models",
    "app.commands.export",
    "app.commands.db",
]

app = typer.Typer(
    name="maskbench",
    help="Inspection and labelling workbench for distilling SAM 2 into tiny edge models.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

log = logging.getLogger("maskbench.cli")


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    project: Optional[str] = typer.Option(None, "--project", "-p", help="Project folder to open in the GUI."),
    selftest: bool = typer.Option(False, "--selftest", help="Run the installation self-test offscreen and exit."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if selftest:
        from app.selftest import run_selftest

        raise typer.Exit(run_selftest())
    from app.commands.gui import launch

    raise typer.Exit(launch(project))


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and a non-zero exit; details go to the log file."""
    from store.errors import UserError

    logs.setup()
    args = sys.argv[1:] if argv is None else argv
    log.info("maskbench %s", " ".join(args))
    try:
        rv = app(args=args, standalone_mode=False, prog_name="maskbench")
        if isinstance(rv, int) and not isinstance(rv, bool):  # click returns typer.Exit's code in this mode
            return rv
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except UserError as exc:
        log.warning("user error: %s", exc)
        typer.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
        log.warning("os error: %s", exc)
        name = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        typer.echo(f"error: {exc.strerror or exc}{name}", err=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - the user gets one line, the log gets the traceback
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            return 1
        log.exception("internal error")
        typer.echo(f"error: {exc.__class__.__name__}: {exc} (details in {logs.log_file()})", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
