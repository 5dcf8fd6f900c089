"""``clearmamba experiment ...`` (reproducible studies) and ``clearmamba active ...`` (active learning).

Heavy modules are imported inside the commands so ``clearmamba --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

experiment_app = typer.Typer(help="Reproducible uncertainty studies on real offline data.", no_args_is_help=True)
active_app = typer.Typer(help="Uncertainty-driven active learning.", no_args_is_help=True)
EDL_OUT = Path("runs/edl-mnist")
ACTIVE_OUT = Path("runs/active-learning")
ACQUISITION_HELP = "Comma-separated: random, entropy, bald, variation_ratio, vote_entropy, mean_kl, vacuity (all)."


def _split(value: str, name: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise typer.BadParameter(f"--{name} needs at least one comma-separated value")
    return items


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def _run_or_explain(fn):
    """Run ``fn``; a missing offline data source becomes a one-line message with the install command."""
    from clearmamba.experiments.sources import MissingSourceError

    try:
        return fn()
    except MissingSourceError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(2) from error


@experiment_app.command("edl-mnist")
def edl_mnist(
    out: Annotated[Path, typer.Option(help="Folder for results.json, table.md and the figures.")] = EDL_OUT,
    quick: Annotated[bool, typer.Option("--quick", help="CI size: 1,000 digits, 1 epoch, 2 members, T=8.")] = False,
    epochs: Annotated[float | None, typer.Option(help="Training epochs per network (default 3, quick 1).")] = None,
    losses: Annotated[str, typer.Option(help="EDL losses: mll (max-likelihood), ce, sse (risks).")] = "mll,ce,sse",
    evidence: Annotated[str, typer.Option(help="Evidence: softplus (labml), relu (paper) or exp.")] = "softplus",
    ensemble_size: Annotated[int | None, typer.Option(help="Deep-ensemble members (default 5, quick 2).")] = None,
    mc_samples: Annotated[int | None, typer.Option(help="MC Dropout passes T (default 32, quick 8).")] = None,
    ood: Annotated[str, typer.Option(help="OOD sets: fashion, animal, letters.")] = "fashion,animal,letters",
    train_size: Annotated[int | None, typer.Option(help="Training digits to use (default all 60,000).")] = None,
    coupled_l2: Annotated[bool, typer.Option("--coupled-l2", help="Adam with L2 in the gradient, not AdamW.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for subsets, initialisation and batch order.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Evidential deep learning on real MNIST vs softmax, MC Dropout and a deep ensemble (OOD: Fashion-MNIST,
    Animal-MNIST, letters A-J rendered from fonts)."""
    import torch

    from clearmamba.experiments.edl_mnist import EDLMnistConfig, run

    torch.set_num_threads(threads)
    overrides = {k: v for k, v in {"epochs": epochs, "ensemble_size": ensemble_size, "mc_samples": mc_samples,
                                   "train_size": train_size}.items() if v is not None}
    overrides.update(losses=_split(losses, "losses"), ood_sets=_split(ood, "ood"), evidence=evidence, seed=seed,
                     decoupled_weight_decay=not coupled_l2)
    try:
        config = EDLMnistConfig.quick_config(**overrides) if quick else EDLMnistConfig(**overrides)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    with _progress() as progress:
        payload = _run_or_explain(lambda: run(config, out, progress, log=progress.console.print))
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/results.json, table.md, entropy_cdf.png, rotating_digit.png "
               f"in {payload['wall_seconds']:.0f} s")


@experiment_app.command("edl-variants")
def edl_variants(
    out: Annotated[Path | None, typer.Option(help="Folder for results.json, table.md, models/.")] = None,
    data: Annotated[str, typer.Option(help="mnist (LeNet) or angiography (built-in data, CLEAR-Mamba).")] = "mnist",
    quick: Annotated[bool, typer.Option("--quick", help="CI size: 1,000 digits, 1 epoch, 2 members.")] = False,
    epochs: Annotated[float | None, typer.Option(help="Training epochs per network (default 5, quick 1).")] = None,
    variants: Annotated[str, typer.Option(help="Trained variants: edl_annealed, edl_fixed, edl_fixed_keep, redl, "
                                               "iedl.")] = "edl_annealed,edl_fixed,edl_fixed_keep,redl,iedl",
    posthoc: Annotated[str, typer.Option(help="Post-hoc steps on each variant: scaled, density, density_scaled, "
                                              "gated_density_scaled ('none' for none).")] = (
        "scaled,density,density_scaled,gated_density_scaled"),
    kl_weight: Annotated[float, typer.Option(help="Fixed KL weight of edl_fixed / edl_fixed_keep.")] = 0.005,
    ood: Annotated[str, typer.Option(help="MNIST's OOD sets: fashion, animal, letters.")] = "fashion,animal,letters",
    prior_weight: Annotated[float, typer.Option(help="R-EDL prior weight lambda.")] = 0.1,
    fisher_weight: Annotated[float, typer.Option(help="I-EDL log-det Fisher weight.")] = 0.005,
    evidence: Annotated[str, typer.Option(help="Evidence activation of the variants: softplus, exp or relu.")] = (
        "softplus"),
    coupled_l2: Annotated[bool, typer.Option("--coupled-l2/--decoupled", help="Adam + L2 in the gradient (issue "
                                             "10's measurement, default) or AdamW.")] = True,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay (default 5e-3).")] = None,
    ensemble_size: Annotated[int | None, typer.Option(help="Deep-ensemble members (default 5, quick 2).")] = None,
    train_size: Annotated[int | None, typer.Option(help="Training digits (default all but the validation).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for subsets, initialisation and batch order.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads (1 on a shared machine).")] = 1,
    doc: Annotated[Path | None, typer.Option(help="Also write the table into this markdown file, between "
                                             "'<!-- edl-variants:<section> start/end -->' markers.")] = None,
    section: Annotated[str | None, typer.Option(help="Marker name in --doc (default: the --data name).")] = None,
) -> None:
    """Issue 10: EDL variants (fixed KL, R-EDL, I-EDL) and post-hoc evidence scaling / density-aware evidence,
    against softmax and a deep ensemble."""
    import sys

    import torch

    from clearmamba.experiments.edl_variants import EDLVariantsConfig, run

    torch.set_num_threads(threads)
    overrides = {k: v for k, v in {"epochs": epochs, "ensemble_size": ensemble_size, "train_size": train_size,
                                   "weight_decay": weight_decay}.items() if v is not None}
    if data == "mnist":
        overrides["ood_sets"] = _split(ood, "ood")
    overrides.update(variants=_split(variants, "variants"), seed=seed, kl_weight=kl_weight,
                     prior_weight=prior_weight, fisher_weight=fisher_weight, data=data, evidence=evidence)
    overrides["posthoc"] = () if posthoc.strip() == "none" else _split(posthoc, "posthoc")
    if data == "mnist" or quick:
        overrides["decoupled_weight_decay"] = not coupled_l2
    try:
        config = (EDLVariantsConfig.quick_config(**overrides) if quick
                  else EDLVariantsConfig.for_data(overrides.pop("data"), **overrides))
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    out = out or Path(f"runs/edl-variants-{data}")
    command = "clearmamba " + " ".join(sys.argv[1:])
    if doc is not None and f"<!-- edl-variants:{section or data} start -->" not in (
        doc.read_text() if doc.is_file() else ""
    ):
        raise typer.BadParameter(f"{doc} has no '<!-- edl-variants:{section or data} start -->' marker",
                                 param_hint="--doc")
    with _progress() as progress:
        payload = _run_or_explain(lambda: run(config, out, progress, log=progress.console.print, command=command))
    table = (out / "table.md").read_text()
    typer.echo(table)
    if doc is not None:
        from clearmamba.experiments.edl_variants_report import write_doc_section

        try:
            header = f"Command: `{command}` ({payload['wall_seconds']:.0f} s)"
            write_doc_section(doc, section or data, f"{header}\n\n{table}")
        except (OSError, ValueError) as error:
            raise typer.BadParameter(str(error), param_hint="--doc") from error
        typer.echo(f"updated {doc} (section {section or data})")
    typer.echo(f"wrote {out}/results.json, table.md in {payload['wall_seconds']:.0f} s")


@experiment_app.command("camera-shift")
def camera_shift(
    out: Annotated[Path, typer.Option(metavar="FOLDER", help="Folder for runs/, results.json and table.md.")] = Path(
        "runs/camera-shift"),
    candidates: Annotated[str | None, typer.Option(metavar="NAMES", help="Comma-separated: no_hac, hac, hac_public, "
                                                   "rap_public, invariant, augment, invariant+augment (all).")] = None,
    seeds: Annotated[int, typer.Option(metavar="N", min=1, help="Seeds (the first trains every candidate).")] = 2,
    keep: Annotated[int, typer.Option(metavar="N", min=1, help="Candidates kept after the first seed.")] = 3,
    workers: Annotated[int, typer.Option(metavar="N", min=1, help="Training processes side by side.")] = 2,
    quick: Annotated[bool, typer.Option("--quick", help="CI size: 2 candidates, 1 seed, tiny sets.")] = False,
    threads: Annotated[int, typer.Option(metavar="N", help="torch CPU threads of this process.")] = 1,
) -> None:
    """Issue 17: CLEAR-Mamba on held-out cameras: HaC variants, invariant preprocessing, camera augmentation and
    test-time BatchNorm adaptation, with the referral rule's accepted error per camera.

    \b
    Example:
      clearmamba experiment camera-shift --out runs/camera-shift --seeds 2
    """
    import torch

    from clearmamba.experiments.camera_shift import CameraShiftConfig, run

    torch.set_num_threads(threads)
    overrides = {"seeds": tuple(range(seeds)), "keep": keep, "workers": workers}
    if candidates is not None:
        overrides["candidates"] = _split(candidates, "candidates")
    try:
        config = CameraShiftConfig.quick_config(**{k: v for k, v in overrides.items() if k == "candidates"}) \
            if quick else CameraShiftConfig(**overrides)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--candidates") from error
    payload = run(config, out, log=typer.echo)
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/results.json, table.md in {payload['wall_seconds']:.0f} s")


@experiment_app.command("referral")
def referral(
    checkpoint: Annotated[list[Path], typer.Option(metavar="RUN", help="A run trained on builtin data (repeatable).")],
    out: Annotated[Path, typer.Option(metavar="FOLDER", help="Folder for results.json and table.md.")] = Path(
        "runs/referral"),
    draws: Annotated[int, typer.Option(metavar="N", min=1, help="Calibration re-draws.")] = 20,
    n_calibration: Annotated[int, typer.Option(metavar="N", min=10, help="Exams per calibration draw.")] = 1000,
    n_test: Annotated[int, typer.Option(metavar="N", min=10, help="Held-out test exams pooled with them.")] = 1000,
    n_ood: Annotated[int, typer.Option(metavar="N", min=1, help="Exams per OOD and held-out-camera set.")] = 300,
    target_risk: Annotated[float, typer.Option(metavar="RISK", min=0.0, max=1.0, help="Allowed error.")] = 0.05,
    delta: Annotated[float, typer.Option(metavar="DELTA", min=0.0, max=1.0, help="Allowed failure rate.")] = 0.1,
    quick: Annotated[bool, typer.Option("--quick", help="CI size: 60 + 60 exams, 20 per OOD set, 3 draws.")] = False,
    threads: Annotated[int, typer.Option(metavar="N", help="torch CPU threads.")] = 1,
) -> None:
    """Issue 18: does each checkpoint's referral promise hold over re-drawn calibration sets of fresh built-in
    exams, and how much of each OOD set does it accept?

    \b
    Example:
      clearmamba experiment referral --checkpoint runs/demo/clear_mamba --checkpoint runs/demo/softmax
    """
    import torch

    from clearmamba.experiments.referral_study import ReferralStudyConfig, run

    torch.set_num_threads(threads)
    options = {"checkpoints": tuple(str(c) for c in checkpoint), "target_risk": target_risk, "delta": delta}
    if quick:
        config = ReferralStudyConfig.quick_config(**options)
    else:
        config = ReferralStudyConfig(n_draws=draws, n_calibration=n_calibration, n_test=n_test, n_ood=n_ood, **options)
    payload = run(config, out, log=typer.echo)
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/results.json, table.md in {payload['wall_seconds']:.0f} s")


@active_app.command("simulate")
def simulate(
    out: Annotated[Path, typer.Option(help="Folder for curves.json, summary.md and the plot.")] = ACTIVE_OUT,
    quick: Annotated[bool, typer.Option("--quick", help="CI size: 3 arms, 1 seed, 2 rounds, 600-image pool.")] = False,
    acquisitions: Annotated[str | None, typer.Option(help=ACQUISITION_HELP)] = None,
    seeds: Annotated[int | None, typer.Option(help="Number of seeds (default 2).")] = None,
    initial_per_class: Annotated[int | None, typer.Option(help="Labelled images per class at the start (20).")] = None,
    acquire: Annotated[int | None, typer.Option(help="Images labelled per round (default 50).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Acquisition rounds (default 6).")] = None,
    pool_size: Annotated[int | None, typer.Option(help="Unlabelled MNIST pool size (default 10,000).")] = None,
    train_steps: Annotated[int | None, typer.Option(help="Training steps per round (default 150).")] = None,
    dataset: Annotated[str, typer.Option(help="Data set: mnist.")] = "mnist",
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 2,
) -> None:
    """Active learning on MNIST: accuracy against labels for each acquisition score, random as baseline."""
    import torch

    from clearmamba.experiments.active_learning import ActiveConfig, run

    if dataset != "mnist":
        raise typer.BadParameter(f"dataset {dataset!r} is not supported yet; use mnist", param_hint="--dataset")
    torch.set_num_threads(threads)
    overrides = {k: v for k, v in {"initial_per_class": initial_per_class, "acquire": acquire, "rounds": rounds,
                                   "pool_size": pool_size, "train_steps": train_steps}.items() if v is not None}
    if acquisitions is not None:
        overrides["acquisitions"] = _split(acquisitions, "acquisitions")
    if seeds is not None:
        overrides["seeds"] = tuple(range(seeds))
    try:
        config = ActiveConfig.quick_config(**overrides) if quick else ActiveConfig(**overrides)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    with _progress() as progress:
        payload = _run_or_explain(lambda: run(config, out, progress, log=progress.console.print))
    typer.echo((out / "summary.md").read_text())
    typer.echo(f"wrote {out}/curves.json, summary.md, learning_curves.png in {payload['wall_seconds']:.0f} s")
