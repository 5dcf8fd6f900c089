"""``clearmamba engine``: PDF angiography reports -> de-identified, labelled dataset, and its review page.
Heavy modules (pdfium, OCR, FastAPI) are imported inside the commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="PDF reports -> de-identified, labelled dataset with a review queue.", no_args_is_help=True
)


@app.command()
def run(
    pdf_dir: Annotated[Path, typer.Argument(help="folder of PDF reports (searched recursively); read-only")],
    out: Annotated[Path, typer.Option("--out", help="output folder: manifest.csv, images/, private/")],
    workers: Annotated[int, typer.Option("--workers", min=1, help="processes working on reports")] = 1,
    vocab: Annotated[Path | None, typer.Option("--vocab", help="label vocabulary, YAML/JSON")] = None,
) -> None:
    """Process every PDF not yet done; re-running resumes and skips finished reports."""
    from clearmamba.engine.pipeline import run as run_engine

    try:
        counts = run_engine(pdf_dir, out, workers=workers, vocabulary=vocab)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err
    _print_counts(counts, out)


@app.command()
def status(out: Annotated[Path, typer.Option("--out", help="output folder of a run")]) -> None:
    """Counts of reports, images and open review items."""
    from clearmamba.engine.pipeline import status as engine_status

    try:
        _print_counts(engine_status(out), out)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err


@app.command()
def review(
    out: Annotated[Path, typer.Option("--out", help="output folder of a run")],
    host: Annotated[str, typer.Option(help="bind address; keep the default")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8765,
) -> None:
    """Serve the review queue on a local web page; the URL with its access token is printed."""
    from clearmamba.engine.review import serve

    try:
        serve(out, host=host, port=port)
    except FileNotFoundError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from err


def _print_counts(counts: dict, out: Path) -> None:
    typer.echo(json.dumps(counts, indent=1))
    if counts.get("failed"):
        typer.echo(f"failed reports are listed in {out / 'private' / 'errors.log'} (private, 0600)")
    if counts.get("review_open"):
        typer.echo(f"open review items: clearmamba engine review --out {out}")
