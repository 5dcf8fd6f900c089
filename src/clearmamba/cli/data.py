"""``clearmamba data``: look at the built-in simulated angiography and check real data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

PREVIEW_PATH = Path("docs/preview.png")
data_app = typer.Typer(help="Built-in simulated angiography data and real-data checks.", no_args_is_help=True)


@data_app.command()
def preview(
    out: Annotated[Path, typer.Option(help="PNG to write (frames across, classes down).")] = PREVIEW_PATH,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 0,
    size: Annotated[int, typer.Option(help="Frame size in pixels.")] = 64,
    frames: Annotated[int, typer.Option(help="Frames per exam.")] = 8,
    scale: Annotated[int, typer.Option(help="Pixel magnification in the PNG.")] = 2,
) -> None:
    """Write a PNG grid of simulated exams: one FFA and one ICGA exam per class."""
    from clearmamba.data.angiography import SimulatorConfig, simulate_exams
    from clearmamba.data.preview import write_preview

    exams = simulate_exams(240, SimulatorConfig(size=size, frames=frames), seed=seed)
    path = write_preview(exams, out, scale=scale)
    typer.echo(f"wrote {path}")


@data_app.command()
def generate(
    out: Annotated[Path, typer.Argument(help="Folder to write PNG frames and manifest.csv into.")],
    n: Annotated[int, typer.Option(help="Number of exams.")] = 100,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 0,
    size: Annotated[int, typer.Option(help="Frame size in pixels.")] = 64,
    frames: Annotated[int, typer.Option(help="Frames per exam.")] = 8,
) -> None:
    """Write simulated exams as PNG frames plus a CSV manifest, the layout ``clearmamba data check`` reads."""
    from clearmamba.data.angiography import SimulatorConfig, simulate_exams
    from clearmamba.data.export import write_manifest

    exams = simulate_exams(n, SimulatorConfig(size=size, frames=frames), seed=seed, progress=True)
    path = write_manifest(exams, out)
    typer.echo(f"wrote {len(exams)} exams to {path}")


@data_app.command()
def check(
    path: Annotated[Path, typer.Argument(help="A CSV manifest, an image folder or a MedMNIST .npz.")],
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Warn about and skip bad exams.")] = False,
    frame_size: Annotated[str | None, typer.Option(metavar="SIZE", help="Resize frames: 32 or HxW.")] = None,
    max_pixels: Annotated[int, typer.Option(metavar="N", min=1, help="Refuse images with more pixels.")] = 100_000_000,
    encoding: Annotated[str, typer.Option(metavar="NAME", help="Text encoding of a manifest .csv.")] = "utf-8",
) -> None:
    """Load a data set the way training will and print what was found (or the first problem).

    \b
    Example:
      clearmamba data check exams/manifest.csv --frame-size 64
    """
    from rich.console import Console
    from rich.table import Table

    from clearmamba.cli.train import parse_frame_size
    from clearmamba.data.loaders import ReadOptions
    from clearmamba.data.sources import open_source

    read = ReadOptions(size=parse_frame_size(frame_size), max_pixels=max_pixels, encoding=encoding)
    source = open_source(str(path), read, skip_bad=skip_bad)
    exams = source.exams()
    n, t, c, h, w = exams.frames.shape
    named = ", ".join(f"{name} {len(s)}" for name, s in source.sets.items())
    typer.echo(f"{path}: {n} exams ({named}), up to {t} frames of {c}x{h}x{w}; frame times: {source.frame_times}")
    table = Table()
    table.add_column("class")
    table.add_column("exams", justify="right")
    for name, count in zip(exams.class_names, exams.class_counts()):
        table.add_row(name, str(count))
    Console().print(table)
    skipped = sum(s.info.get("skipped", 0) for s in source.sets.values())
    typer.echo(f"patients: {len(set(exams.patient_id))}, skipped: {skipped}")
