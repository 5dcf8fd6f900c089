"""``clearmamba train | evaluate | predict | demo``. Heavy imports live inside the command bodies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def train(
    data: Annotated[str, typer.Option(help="builtin, a MedMNIST-style .npz, an image folder or a manifest .csv")],
    model: Annotated[str, typer.Option(help="clear_mamba_tiny/t/s/b, clear_resnet18, ...")] = "clear_mamba_tiny",
    head: Annotated[str, typer.Option(help="evidential (RaP) or softmax")] = "evidential",
    temporal: Annotated[str, typer.Option(help="mamba, mean, max or last (single frame)")] = "mamba",
    hac: Annotated[bool, typer.Option(help="hyper-adaptive conditioning after the backbone")] = True,
    out: Annotated[Path, typer.Option(help="run folder (checkpoint/, last/, metrics.csv)")] = Path("runs/x"),
    epochs: Annotated[int, typer.Option()] = 20,
    batch_size: Annotated[int, typer.Option()] = 16,
    lr: Annotated[float, typer.Option()] = 1e-3,
    kl_weight: Annotated[float, typer.Option(help="lambda of the evidential KL term")] = 0.05,
    evidence: Annotated[str, typer.Option(help="RaP's evidence activation: softplus, exp (try it when RaP trains "
                                               "far below a softmax twin, docs/methods.md) or relu")] = "softplus",
    balanced: Annotated[bool, typer.Option(help="class-balanced sampling for long-tailed labels")] = False,
    frame_size: Annotated[int | None, typer.Option(help="frame side in pixels (builtin: 32)")] = None,
    target_risk: Annotated[float, typer.Option(help="allowed error on accepted cases")] = 0.05,
    resume: Annotated[bool, typer.Option(help="continue from <out>/last after an interruption")] = False,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Train a model and store its checkpoint with a refer-to-a-doctor threshold chosen on validation."""
    from clearmamba.training import TrainConfig
    from clearmamba.training.run import train_model
    from clearmamba.training.sources import load_data

    sets = load_data(data, frame_size=frame_size, seed=seed)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, kl_weight=kl_weight, balanced_sampling=balanced,
                      seed=seed)  # fmt: skip
    options = {"head": head, "temporal": temporal, "hac": hac}
    if head == "evidential":
        options["evidence"] = evidence
    _, config = train_model(sets, out, model, options, cfg, target_risk, resume=resume, data_spec=data)
    rule = config["referral"]
    typer.echo(
        f"best epoch {config['epoch']}: val accuracy {config['val_metrics']['val_acc']:.3f}; refer when "
        f"{rule['score']} > {rule['threshold']:.4f} (validation coverage {rule['validation_coverage']:.1%} at "
        f"{rule['target_risk']:.0%} risk). Checkpoint: {out / 'checkpoint'}"
    )


def evaluate(
    checkpoint: Annotated[Path, typer.Option(help="run folder or checkpoint folder")],
    data: Annotated[str, typer.Option(help="builtin, .npz, folder or manifest .csv (test split)")],
    ood: Annotated[list[str] | None, typer.Option(help="extra OOD set as name=path (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default <checkpoint>/eval)")] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap resamples for the intervals")] = 200,
) -> None:
    """metrics.json, per-sample predictions.csv and report.html for a trained checkpoint."""
    from clearmamba.training import load_model, predict
    from clearmamba.training.evaluate import gallery_frames, write_evaluation
    from clearmamba.training.sources import as_unknown, load_data

    model, config = load_model(checkpoint)
    frame_size = config["preprocessing"]["frame_size"][0]
    sets = load_data(data, frame_size=frame_size, in_chans=config["preprocessing"]["in_chans"])
    eval_sets = {k: v for k, v in sets.items() if k not in ("train", "val")}
    for item in ood or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"--ood {item!r}: expected name=path")
        extra = load_data(path, frame_size=frame_size, in_chans=config["preprocessing"]["in_chans"])
        eval_sets[name if name.startswith("ood") else f"ood_{name}"] = as_unknown(extra, name)
    name = config["arch"]
    predictions = {name: {k: predict(model, v) for k, v in eval_sets.items()}}
    oods = [k for k in eval_sets if k.startswith("ood")]
    out = out or Path(checkpoint) / "eval"
    metrics = write_evaluation(
        out, predictions, config["classes"], ood_sets={"test": oods} if oods else None,
        rules={name: config.get("referral")}, gallery=gallery_frames(eval_sets), n_boot=n_boot,
        metadata={"checkpoint": str(checkpoint), "data": data},
    )  # fmt: skip
    test = metrics["models"][name].get("test", {})
    typer.echo(json.dumps({"test": test}, indent=2, default=float))
    typer.echo(f"wrote {out / 'metrics.json'}, {out / 'predictions.csv'}, {out / 'report.html'}")


def predict_cmd(
    paths: Annotated[list[Path], typer.Argument(help="image files (one-frame exams) or exam folders of frames")],
    checkpoint: Annotated[Path, typer.Option(help="run folder or checkpoint folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """Diagnosis, probability, uncertainty and a refer-to-a-doctor flag for each exam."""
    from clearmamba.training import load_model
    from clearmamba.training.predict import predict_paths

    model, config = load_model(checkpoint)
    results, errors = predict_paths(model, config, paths)
    for error in errors:
        typer.echo(f"skipped {error}", err=True)
    if as_json:
        typer.echo(json.dumps({"results": results, "skipped": errors}, indent=2))
    else:
        for r in results:
            verdict = "REFER TO A DOCTOR" if r["refer"] else "accept"
            typer.echo(
                f"{r['exam']}: {r['diagnosis']} (p={r['probability']:.3f}, K/S={r.get('vacuity', float('nan')):.3f}, "
                f"entropy={r['entropy']:.3f}) -> {verdict}"
            )
    if not results:
        raise typer.Exit(code=1)


def demo(
    quick: Annotated[bool, typer.Option(help="tiny sizes for CI (about a minute)")] = False,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("runs/demo"),
) -> None:
    """Simulate the built-in data, train CLEAR-Mamba + softmax + single-frame twins, write the trust report."""
    from clearmamba.training.demo import run_demo

    metrics = run_demo(out, quick=quick, progress=sys.stdout.isatty())
    typer.echo(json.dumps(metrics["claims"], indent=2, default=float))
    typer.echo(f"wrote {out / 'report.html'} and {out / 'metrics.json'} in {metrics['seconds']:.0f} s")


def register(app: typer.Typer) -> None:
    app.command()(train)
    app.command()(evaluate)
    app.command(name="predict")(predict_cmd)
    app.command()(demo)
