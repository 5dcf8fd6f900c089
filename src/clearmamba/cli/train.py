"""``clearmamba train | evaluate | predict | demo``. Heavy imports live inside the command bodies; every name a
user types (model, head, options) is checked before any data is read."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from clearmamba.errors import UserError

Head = Literal["evidential", "softmax"]
Temporal = Literal["mamba", "mean", "max", "last"]
Evidence = Literal["softplus", "exp", "relu"]
Split = Literal["auto", "test", "all"]
DEMO_OUT = Path("runs/demo")


def Opt(metavar: str, help: str = "", **kwargs):  # noqa: N802 - reads like typer.Option
    """``typer.Option`` with a metavar saying what to type (not a type name)."""
    return typer.Option(metavar=metavar, help=help, **kwargs)


def parse_frame_size(value: str | None) -> tuple[int, int] | None:
    """``32`` or ``32x48`` (height x width) -> (h, w)."""
    if value is None:
        return None
    parts = value.lower().replace(" ", "").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or min(size) < 8:
        raise UserError(f"--frame-size {value}: expected a side like 32, or height x width like 32x48 (at least 8 px)")
    return size  # type: ignore[return-value]


def parse_floats(value: str | None, flag: str) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} {value}: expected comma-separated numbers, e.g. 0,15,30,60") from None


def check_model(model: str) -> None:
    from clearmamba.models import list_models

    names = list_models("clear_*")
    if model not in names:
        raise UserError(f"--model {model}: unknown model; expected one of {', '.join(names)}")


def device_option(value: str) -> str:
    import torch

    if value not in ("auto", "cpu") and not value.startswith("cuda"):
        raise UserError(f"--device {value}: expected auto, cpu, cuda or cuda:N")
    if value.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {value}: no CUDA device is available here; use --device cpu")
    return value


def train(
    data: Annotated[str, Opt("SOURCE", "builtin, a MedMNIST-style .npz, an image folder or a manifest .csv")],
    out: Annotated[Path, Opt("FOLDER", "run folder to create (checkpoint/, last/, metrics.csv)")],
    model: Annotated[str, Opt("NAME", "clear_mamba_tiny/t/s/b, clear_resnet18, clear_densenet121")] = (
        "clear_mamba_tiny"),
    head: Annotated[Head, typer.Option(help="evidential (RaP) or softmax")] = "evidential",
    temporal: Annotated[Temporal, typer.Option(help="how frames are combined")] = "mamba",
    hac: Annotated[bool, typer.Option("--hac/--no-hac", help="hyper-adaptive conditioning after the backbone")] = True,
    epochs: Annotated[int, Opt("N", "training epochs", min=1)] = 20,
    batch_size: Annotated[int, Opt("N", "exams per step", min=1)] = 16,
    lr: Annotated[float, Opt("RATE", "peak learning rate (> 0)")] = 1e-3,
    kl_weight: Annotated[float, Opt("WEIGHT", "lambda of the evidential KL term", min=0.0)] = 0.05,
    evidence: Annotated[Evidence, typer.Option(help="RaP's evidence activation (exp when RaP trains far below a "
                                               "softmax twin, docs/methods.md)")] = "softplus",
    balanced: Annotated[bool, typer.Option("--balanced", help="class-balanced sampling (long-tailed labels)")] = False,
    camera_augment: Annotated[bool, typer.Option("--camera-augment/--no-camera-augment", help="see each training "
                                                 "exam through a random camera (tone, noise, optics, aperture, "
                                                 "JPEG; docs/camera-shift.md)")] = True,
    invariant: Annotated[bool, typer.Option("--invariant", help="acquisition-invariant preprocessing (field of "
                                            "view, gain and gamma removed), recorded with the model")] = False,
    frame_size: Annotated[str | None, Opt("SIZE", "resize frames: 32 or HxW (builtin: 32; files: as read)")] = None,
    channels: Annotated[int | None, Opt("1|3", "1 (grey) or 3 (colour); default as read", min=1, max=3)] = None,
    classes: Annotated[str | None, Opt("NAMES", "declared class names, comma-separated (labels must be among them; "
                                       "numeric labels name 0, 1, ... in order)")] = None,
    target_risk: Annotated[float, Opt("RISK", "allowed error on accepted exams", min=0.0, max=1.0)] = 0.05,
    delta: Annotated[float | None, Opt("DELTA", "demand the guarantee: accepted error <= --target-risk with "
                                       "probability >= 1 - DELTA; refuse when the validation exams cannot give it "
                                       "(default: 0.1, warn only)", min=0.0, max=1.0)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run in --out after an interruption")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing run in --out")] = False,
    max_pixels: Annotated[int, Opt("N", "refuse images with more pixels", min=1)] = 100_000_000,
    encoding: Annotated[str, Opt("NAME", "text encoding of a manifest .csv")] = "utf-8",
    device: Annotated[str, Opt("DEVICE", "auto, cpu or cuda[:N]")] = "auto",
    seed: Annotated[int, Opt("N", "seed for splits, initialisation and batch order")] = 0,
) -> None:
    """Train a model and store its checkpoint with a refer-to-a-doctor rule fitted on validation.

    \b
    Example:
      clearmamba train --data builtin --out runs/first
      clearmamba train --data exams/manifest.csv --out runs/mine --frame-size 64 --epochs 30
    """
    from clearmamba.data.loaders import ReadOptions
    from clearmamba.data.sources import describe
    from clearmamba.models.clear_mamba import check_options
    from clearmamba.training import TrainConfig, train_run
    from clearmamba.training.record import MethodSpec
    from clearmamba.training.run import RunConfig

    check_model(model)
    options = {"head": head, "temporal": temporal, "hac": hac}
    if head == "evidential":
        options["evidence"] = evidence
    try:
        check_options(model, options)
    except ValueError as error:
        raise UserError(f"--model {model}: {error}") from None
    size = parse_frame_size(frame_size)
    method = MethodSpec(head, {"kl_weight": kl_weight, "evidence": evidence} if head == "evidential" else {})
    try:
        train_cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, balanced_sampling=balanced, seed=seed,
                                device=device_option(device))  # fmt: skip
    except ValueError as error:  # TrainConfig names its field; the user typed the flag
        field = str(error).split(":")[0].removeprefix("TrainConfig.")
        raise UserError(f"--{field.replace('_', '-')}: {str(error).split(': ', 1)[-1]}") from None
    cfg = RunConfig(
        data=data, arch=model, model_options=options, method=method, train=train_cfg,
        read=ReadOptions(channels=channels, size=size or ((32, 32) if data == "builtin" else None),
                         max_pixels=max_pixels, encoding=encoding),
        classes=tuple(c.strip() for c in classes.split(",")) if classes else None, target_risk=target_risk,
        delta=0.1 if delta is None else delta, require_guarantee=delta is not None,
    )  # fmt: skip
    from dataclasses import replace

    if data == "builtin":
        cfg = replace(cfg, builtin=replace(cfg.builtin, size=size[0] if size else cfg.builtin.size,
                                           train_camera="ideal" if camera_augment else "devices"))  # fmt: skip
    if camera_augment:
        from clearmamba.data.camera_family import CameraAugment

        cfg = replace(cfg, camera_augment=CameraAugment())
    if invariant:
        from clearmamba.data.invariant import INVARIANT

        cfg = replace(cfg, intensity=INVARIANT)
    from clearmamba.training.run import open_training_data, prepare_out

    prepare_out(out, resume, overwrite)
    loaded = open_training_data(cfg)
    typer.echo(describe(*loaded))
    _, record = train_run(cfg, out, resume=resume, log=typer.echo, live=sys.stdout.isatty(), data=loaded,
                          prepared=True)  # fmt: skip
    outcome = record.outcome
    typer.echo(f"best epoch {outcome.best_epoch} of {outcome.epochs_run}: validation accuracy {outcome.val_acc:.3f}")
    typer.echo(f"referral rule: {record.referral.describe()}")
    typer.echo(f"checkpoint: {out / 'checkpoint'}")


def evaluate(
    checkpoint: Annotated[Path, Opt("RUN", help="run folder or checkpoint folder")],
    data: Annotated[str, Opt("SOURCE", help="builtin, .npz, image folder or manifest .csv")],
    split: Annotated[Split, typer.Option(help="auto: the recorded test split when --data is the training source, "
                                         "else all of it")] = "auto",
    ood: Annotated[list[str] | None, Opt("NAME=PATH", help="an OOD set as name=path (repeatable)")] = None,
    out: Annotated[Path | None, Opt("FOLDER", help="output folder (default <checkpoint>/eval)")] = None,
    n_boot: Annotated[int, Opt("N", min=0, help="bootstrap resamples for the intervals")] = 200,
    adapt: Annotated[bool, typer.Option("--adapt", help="re-estimate BatchNorm statistics on each scored set's "
                                        "unlabelled exams first (a new camera; labels are never used)")] = False,
    max_pixels: Annotated[int, Opt("N", min=1, help="refuse images with more pixels")] = 100_000_000,
    encoding: Annotated[str, Opt("NAME", help="text encoding of a manifest .csv")] = "utf-8",
    device: Annotated[str, Opt("DEVICE", help="auto, cpu or cuda[:N]")] = "cpu",
) -> None:
    """Score a trained checkpoint: metrics.json, predictions.csv and report.html.

    \b
    Example:
      clearmamba evaluate --checkpoint runs/first --data builtin
      clearmamba evaluate --checkpoint runs/mine --data new_site/manifest.csv --ood other=stills/
    """
    from clearmamba.training.evaluate_run import run_evaluation

    oods = {}
    for item in ood or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--ood {item}: expected name=path, e.g. --ood stills=folder/")
        oods[name] = path
    out = out or Path(checkpoint) / "eval"
    metrics, notes = run_evaluation(checkpoint, data, split, oods, out, n_boot, max_pixels, encoding,
                                    device_option(device), adapt)  # fmt: skip
    for note in notes:
        typer.echo(note)
    typer.echo(json.dumps({"test": metrics["test"]}, indent=2, default=float))
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'predictions.csv'}, {out / 'report.html'}")


def predict_cmd(
    paths: Annotated[list[Path], typer.Argument(help="image files (one-frame exams) or exam folders of frames")],
    checkpoint: Annotated[Path, Opt("RUN", help="run folder or checkpoint folder")],
    frame_times: Annotated[str | None, Opt("SECONDS", help="seconds after injection, one per frame, e.g. "
                                           "0,15,30,60 (default: the training exams' typical times)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of one line per exam")] = False,
    max_pixels: Annotated[int, Opt("N", min=1, help="refuse images with more pixels")] = 100_000_000,
    device: Annotated[str, Opt("DEVICE", help="auto, cpu or cuda[:N]")] = "cpu",
) -> None:
    """Diagnosis, probability, uncertainty and a refer-to-a-doctor decision for each exam.

    \b
    Example:
      clearmamba predict --checkpoint runs/first exam_folder/ image.png
      clearmamba predict --checkpoint runs/first exam_folder/ --frame-times 0,15,30,60,120,300 --json
    """
    from clearmamba.training import load_run
    from clearmamba.training.inference import predict_files

    times = parse_floats(frame_times, "--frame-times")
    model, record = load_run(checkpoint, device_option(device))
    results, errors = predict_files(model, record, paths, times, max_pixels)
    for error in errors:
        typer.echo(f"skipped {error}", err=True)
    if as_json:
        typer.echo(json.dumps({"results": [r.to_dict() for r in results], "skipped": errors}, indent=2))
    else:
        for r in results:
            d = r.decision
            if d.diagnosis is not None:
                what = f"{d.diagnosis} (probability {d.confidence:.2f})"
            else:
                what = f"possibly {' or '.join(d.prediction_set)}" if d.prediction_set else "no diagnosis"
            typer.echo(f"{r.exam}: {d.decision.upper()} - {what}")
            typer.echo(f"  why: {d.reason}")
            for note in r.notes:
                typer.echo(f"  note: {note}")
    if not results:
        raise typer.Exit(code=1)


def demo(
    quick: Annotated[bool, typer.Option("--quick", help="tiny sizes for CI (about a minute)")] = False,
    out: Annotated[Path, Opt("FOLDER", help="output folder (an earlier demo there is replaced)")] = DEMO_OUT,
) -> None:
    """Simulate the built-in data, train CLEAR-Mamba + softmax + single-frame twins, write the trust report.

    \b
    Example:
      clearmamba demo --quick --out runs/demo-quick
    """
    from clearmamba.training.demo import run_demo

    metrics = run_demo(out, quick=quick, progress=sys.stdout.isatty(), log=typer.echo)
    typer.echo(json.dumps(metrics["claims"], indent=2, default=float))
    typer.echo(f"wrote {out / 'report.html'} and {out / 'metrics.json'} in {metrics['seconds']:.0f} s")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(evaluate)
    app.command(name="predict")(predict_cmd)
    app.command()(demo)
