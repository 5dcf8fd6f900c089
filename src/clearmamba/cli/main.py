"""The ``clearmamba`` command. Each concern adds its commands from its own module; heavy imports stay inside the
command functions so that ``clearmamba --help`` is fast.

One error surface: a failure the user can fix (:class:`clearmamba.errors.UserError`, a missing optional package,
a bad flag) prints one ``error:`` line naming the file, field or flag and exits with status 2. ``--debug`` (or
``CLEARMAMBA_DEBUG=1``) shows the traceback instead; anything unexpected says how to report it.
"""

from __future__ import annotations

import os
import sys

import typer

from clearmamba import __version__
from clearmamba.cli import train as train_cli
from clearmamba.cli.data import data_app
from clearmamba.cli.engine import app as engine_app
from clearmamba.cli.experiment import active_app, experiment_app
from clearmamba.errors import UserError, missing_extra

app = typer.Typer(
    name="clearmamba",
    help="Uncertainty-aware angiography classification: train, evaluate, refer, and build datasets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"clearmamba {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback instead of a one-line error."),
) -> None:
    """Uncertainty-aware angiography classification: train, evaluate, refer, and build datasets."""


@app.command()
def version() -> None:
    """Print the clearmamba version."""
    typer.echo(__version__)


train_cli.register(app)  # train, evaluate, predict, demo


app.add_typer(data_app, name="data")
app.add_typer(engine_app, name="engine")
app.add_typer(experiment_app, name="experiment")
app.add_typer(active_app, name="active")


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the command line; expected failures become one line on stderr (status 2)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("CLEARMAMBA_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line, not only before the command
    try:
        app(args=argv, prog_name="clearmamba", standalone_mode=True)
    except UserError as error:
        if debug:
            raise
        _fail(str(error))
    except ImportError as error:
        extra = missing_extra(error)
        if debug or extra is None:
            raise
        _fail(str(extra))
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as error:  # a bug, not a user error: keep it short, say how to see more
        if debug:
            raise
        _fail(f"unexpected {type(error).__name__}: {error}\n(run again with --debug for the traceback, and please "
              "report it)", 1)


if __name__ == "__main__":
    main()
