"""The ``clearmamba`` command. Each concern adds its commands from its own module; heavy imports stay
inside the command functions so that ``clearmamba --help`` is fast."""

from __future__ import annotations

import typer

from clearmamba import __version__
from clearmamba.cli import train as train_cli
from clearmamba.cli.data import data_app
from clearmamba.cli.engine import app as engine_app

app = typer.Typer(
    name="clearmamba",
    help="Uncertainty-aware angiography classification: train, evaluate, refer, and build datasets.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the clearmamba version."""
    typer.echo(__version__)


train_cli.register(app)  # train, evaluate, predict, demo


app.add_typer(data_app, name="data")
app.add_typer(engine_app, name="engine")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
