"""``clearmamba engine``: PDF angiography reports -> de-identified, labelled dataset, and its review page.
Heavy modules (pdfium, OCR, FastAPI) are imported inside the commands. Expected failures (a missing folder, a
bad ``--out`` or ``--vocab``) raise :class:`clearmamba.errors.UserError` subclasses that name the flag or file;
``clearmamba``'s main prints them as one ``error:`` line."""

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
    out: Annotated[Path, typer.Option("--out", help="output folder (new, empty, or an earlier run's to resume): "
                                                    "manifest.csv, images/, private/")],
    workers: Annotated[int, typer.Option("--workers", min=1, help="processes working on reports")] = 1,
    vocab: Annotated[Path | None, typer.Option("--vocab", help="label vocabulary, YAML/JSON")] = None,
) -> None:
    """Process every PDF not yet done; re-running resumes and skips finished reports.

    Example: clearmamba engine run reports/ --out dataset/ --workers 2
    """
    from clearmamba.engine.pipeline import run as run_engine

    _print_counts(run_engine(pdf_dir, out, workers=workers, vocabulary=vocab), out)


@app.command()
def status(out: Annotated[Path, typer.Option("--out", help="output folder of a run")]) -> None:
    """Counts of reports, images and open review items.

    Example: clearmamba engine status --out dataset/
    """
    from clearmamba.engine.pipeline import status as engine_status

    _print_counts(engine_status(out), out)


@app.command()
def review(
    out: Annotated[Path, typer.Option("--out", help="output folder of a run")],
    host: Annotated[str, typer.Option(help="bind address; keep the default")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8765,
) -> None:
    """Serve the review queue on a local web page; the URL with its access token is printed.

    Example: clearmamba engine review --out dataset/
    """
    from clearmamba.engine.review import serve

    serve(out, host=host, port=port)


def _print_counts(counts: dict, out: Path) -> None:
    typer.echo(json.dumps(counts, indent=1))
    if counts.get("failed"):
        typer.echo(f"failed reports are listed in {out / 'private' / 'errors.log'} (private, 0600)")
    if counts.get("review_open"):
        typer.echo(f"open review items: clearmamba engine review --out {out}")
