"""``clearmamba demo``: built-in data -> CLEAR-Mamba, a softmax twin and a single-frame twin -> trust report.

Three models share the conv-stem MedMamba-nano backbone (``clear_mamba_tiny``) and HaC and differ in one thing each:

- ``clear_mamba``: evidential (RaP) head + temporal Mamba over the frames (CLEAR-Mamba);
- ``softmax``: the same network with a softmax head (does evidential uncertainty help?);
- ``single_frame``: evidential, but it sees only the last frame (does time help with leakage vs staining?).

All are evaluated on the in-distribution test set, the held-out-device set and the named OOD sets;
``<out>/report.html`` and ``<out>/metrics.json`` hold the results, ``<out>/<model>/`` the checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clearmamba.data.camera_family import CameraAugment
from clearmamba.data.sources import BuiltinData, Source, examset_sha256, load_builtin, training_splits
from clearmamba.errors import UserError

from .config import TrainConfig
from .evaluate import class_pair_accuracy, gallery_frames, provenance_of, write_evaluation
from .load import load_run
from .predict import predict
from .record import MethodSpec
from .run import RunConfig, train_run

MODELS: dict[str, dict[str, Any]] = {
    "clear_mamba": {"head": "evidential", "temporal": "mamba", "hac": True},
    "softmax": {"head": "softmax", "temporal": "mamba", "hac": True},
    "single_frame": {"head": "evidential", "temporal": "last", "hac": True},
}


@dataclass(frozen=True)
class DemoConfig:
    size: int = 32
    frames: int = 6
    # the three classes the temporal question is about; the other simulated diseases need far more CPU time
    classes: tuple[str, ...] = ("normal", "leakage", "staining")
    n_train: int = 900
    n_val: int = 120
    n_test: int = 180
    n_heldout: int = 120
    n_ood: int = 90
    # the referral rule's calibration exams: enough for a 5 % promise at delta 0.1 to be meaningful (with a few
    # percent of errors ~1,000 are needed; evaluation.risk_control). Simulated and predicted, never trained on.
    n_calibration: int = 2000
    # issue 17's default (docs/camera-shift.md): each training exam through a random camera of the training family
    camera_augment: bool = True
    n_camera: int = 100  # exams per held-out camera in the report's camera section (0: no section)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-3
    kl_weight: float = 0.05  # RaP's recipe from docs/edl-variants.md: fixed weight, no annealing
    anneal_epochs: float = 0.0
    n_boot: int = 200
    seed: int = 0
    workers: int = 3  # train the three twins side by side, one process (and thread) each
    # clear_mamba_tiny's MedMamba-nano with its conv stem; d_state 4 halves the scan's cost at no loss here
    backbone_kwargs: tuple = (("d_state", 4),)


QUICK = DemoConfig(
    size=32, frames=4, n_train=48, n_val=15, n_test=24, n_heldout=12, n_ood=8, n_calibration=0, n_camera=4,
    epochs=2, batch_size=16,
    n_boot=20, workers=1,
)  # fmt: skip


def previous_demo(out: Path) -> bool:
    """True when ``out`` holds nothing but an earlier demo's output (which a new demo replaces)."""
    import json

    if not out.exists() or not any(out.iterdir()):
        return True
    try:
        return json.loads((out / "metrics.json").read_text()).get("command", "").startswith("clearmamba demo")
    except (OSError, ValueError, AttributeError):
        return False


def run_demo(out: str | Path = "runs/demo", quick: bool = False, config: DemoConfig | None = None,
             progress: bool = True, log=print) -> dict[str, Any]:  # fmt: skip
    cfg = config or (QUICK if quick else DemoConfig())
    out = Path(out)
    if not previous_demo(out):
        raise UserError(f"--out {out}: exists and does not hold an earlier demo; choose another --out")
    started = time.perf_counter()
    log(f"simulating the built-in angiography data ({cfg.n_train} training exams of {', '.join(cfg.classes)}; "
        f"{cfg.frames} frames of {cfg.size}x{cfg.size}) ...")  # fmt: skip
    builtin = BuiltinData(n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test, n_heldout=cfg.n_heldout,
                          n_ood=cfg.n_ood, n_calibration=cfg.n_calibration, size=cfg.size, frames=cfg.frames,
                          classes=cfg.classes, seed=cfg.seed,
                          train_camera="ideal" if cfg.camera_augment else "devices")  # fmt: skip
    sets = load_builtin(builtin)
    source = Source("builtin", sets, examset_sha256(*sets.values()), "seconds")
    splits, rule = training_splits(source, cfg.seed)
    class_names = list(sets["train"].class_names)
    eval_names = [n for n in sets if n not in ("train", "val", "calibration")]
    ood_names = [n for n in eval_names if n.startswith("ood")]
    train_cfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                            patience=max(3, cfg.epochs // 2), seed=cfg.seed)  # fmt: skip
    jobs = {}
    for name, options in MODELS.items():
        method = MethodSpec(options["head"], {"kl_weight": cfg.kl_weight, "anneal_epochs": cfg.anneal_epochs}
                            if options["head"] == "evidential" else {})  # fmt: skip
        jobs[name] = RunConfig(data="builtin", arch="clear_mamba_tiny",
                               model_options={**options, "backbone_kwargs": dict(cfg.backbone_kwargs)},
                               method=method, train=train_cfg, builtin=builtin,
                               camera_augment=CameraAugment() if cfg.camera_augment else None)  # fmt: skip
    timings = train_twins(jobs, out, (source, splits, rule), cfg.workers, log, progress)
    predictions, rules, records = {}, {}, {}
    for name in jobs:
        model, record = load_run(out / name)
        rules[name], records[name] = record.referral, record
        with torch.no_grad():
            predictions[name] = {s: predict(model, sets[s], train_cfg.eval_batch_size) for s in eval_names}
    pair = ("leakage", "staining")
    leakage_vs_staining = {m: class_pair_accuracy(p["test"], class_names, pair) for m, p in predictions.items()}
    cameras = held_out_cameras(cfg, out, jobs, sets["test"], log) if cfg.n_camera > 0 else {}
    log("writing the trust report ...")
    metrics = write_evaluation(
        out,
        predictions,
        class_names,
        ood_sets={"test": ood_names},
        rules=rules,
        gallery=gallery_frames({s: sets[s] for s in eval_names}),
        title="clearmamba demo: can the model say 'I don't know'?",
        n_boot=cfg.n_boot,
        extra={"leakage_vs_staining_accuracy": leakage_vs_staining, "train_seconds": timings,
               "held_out_cameras": cameras},
        extra_sections=[camera_section(cameras)] if cameras else (),
        metadata={"command": "clearmamba demo" + (" --quick" if quick else ""), "data": "built-in simulator"},
        provenance=provenance_of({name: (records[name], out / name) for name in jobs},
                                 "clearmamba demo" + (" --quick" if quick else "")),
    )
    metrics["claims"] = claims(metrics, rules)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    metrics["command"] = "clearmamba demo" + (" --quick" if quick else "")
    from .checkpoint import write_json

    write_json(out / "metrics.json", metrics)
    return metrics


def held_out_cameras(cfg: DemoConfig, out: Path, jobs, test, log) -> dict[str, Any]:
    """Every twin on the held-out cameras (docs/camera-shift.md), as trained and after BatchNorm re-estimation
    on each camera's unlabelled exams."""
    from clearmamba.data import SimulatorConfig
    from clearmamba.data.builtin import make_camera_sets

    from .held_out_cameras import score_cameras, summarize

    cameras = make_camera_sets(n=cfg.n_camera, config=SimulatorConfig(size=cfg.size, frames=cfg.frames,
                                                                      classes=cfg.classes), seed=cfg.seed)  # fmt: skip
    log(f"scoring the three twins on {len(cameras)} held-out cameras ({cfg.n_camera} exams each) ...")
    result = {}
    for name in jobs:
        model, record = load_run(out / name)
        scores = score_cameras(model, record, test, cameras)
        result[name] = {"summary": {e: summarize(s, record.referral.target_risk) for e, s in scores.items()},
                        "per_camera": scores}  # fmt: skip
    return result


def camera_section(cameras: dict[str, Any]) -> dict[str, Any]:
    """The report's held-out-camera section: per model, per camera, accuracy and the rule's accepted error."""
    from clearmamba.report.view import cell

    def pct(p):
        return "n/a" if p["n"] == 0 else f"{100 * p['value']:.1f} %"

    tables = []
    for model, entry in cameras.items():
        plain, adapted = entry["per_camera"]["plain"], entry["per_camera"]["+bn"]
        rows = [[cell(name, left=True), cell(pct(plain[name]["accuracy"])), cell(pct(adapted[name]["accuracy"])),
                 cell(pct(plain[name]["coverage"])), cell(pct(plain[name]["accepted_error"])),
                 cell(pct(adapted[name]["accepted_error"]))] for name in plain]  # fmt: skip
        summary = entry["summary"]["plain"]
        tables.append({"title": f"{model}: mean camera accuracy {100 * summary['mean_camera_accuracy']:.1f} % "
                                f"(test {100 * summary['test_accuracy']:.1f} %)",
                       "caption": None,
                       "head": ["camera", "accuracy", "accuracy +bn", "accepted (rule)", "error among accepted",
                                "error among accepted +bn"], "rows": rows})  # fmt: skip
    return {"anchor": "cameras", "heading": "Cameras the model never saw",
            "intro": ("Each held-out camera differs from every training camera in at least three settings (tone, "
                      "noise, optics, aperture, compression; docs/camera-shift.md). '+bn': after re-estimating the "
                      "network's BatchNorm statistics on that camera's unlabelled exams. The referral rule was "
                      "fitted on in-distribution exams; under a camera shift its promise need not hold."),
            "tables": tables}


def train_one(name: str, run: RunConfig, out: Path, data, threads: int | None, progress: bool) -> tuple[str, float]:
    """One twin's training job (in a worker process when the demo trains them side by side)."""
    if threads is not None:
        torch.set_num_threads(threads)

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    log(f"training {name} ({run.method.name} head, temporal={run.model_options.get('temporal', 'mamba')}) ...")
    train_run(run, out / name, overwrite=True, log=log, live=progress, data=data, name=name)
    return name, round(time.perf_counter() - started, 1)


def train_twins(jobs: dict[str, RunConfig], out: Path, data, workers: int, log=print,
                progress: bool = False) -> dict[str, float]:  # fmt: skip
    """Train every twin into ``out/<name>``; with ``workers > 1`` in that many processes at one thread each
    (three small models on two cores finish sooner side by side than one after another at two threads)."""
    if workers <= 1:
        timings = {}
        for name, run in jobs.items():
            temporal = run.model_options.get("temporal", "mamba")
            log(f"training {name} ({run.method.name} head, temporal={temporal}) ...")
            started = time.perf_counter()
            train_run(run, out / name, overwrite=True, log=log, live=progress, data=data, name=name)
            timings[name] = round(time.perf_counter() - started, 1)
        return timings
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    log(f"training {', '.join(jobs)} side by side ({workers} processes, 1 thread each) ...")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(train_one, name, run, out, data, 1, False) for name, run in jobs.items()]
        return dict(future.result() for future in futures)


def claims(metrics: dict, rules: dict) -> dict[str, Any]:
    """The three comparisons the demo exists to show, with their numbers. OOD AUROC is each model's own
    unfamiliar-input score (its referral rule's: RaP's density, the softmax twin's energy)."""
    test = {m: metrics["models"][m]["test"] for m in metrics["models"]}
    evid, soft = test["clear_mamba"], test["softmax"]
    ood = {o: (evid["ood_auroc"][o], soft["ood_auroc"][o]) for o in evid.get("ood_auroc", {})}
    pair = metrics["leakage_vs_staining_accuracy"]
    return {
        "wrong_confidence_median": {"clear_mamba": evid["wrong_confidence_median"],
                                    "softmax": soft["wrong_confidence_median"]},  # fmt: skip
        "evidential_less_confident_when_wrong": evid["wrong_confidence_median"] < soft["wrong_confidence_median"],
        "ood_auroc_clear_mamba_vs_softmax": ood,
        "clear_mamba_beats_softmax_on_ood": {o: a > b for o, (a, b) in ood.items()},
        "scores": {m: {"mistake": r.mistake_score, "unfamiliar": r.unfamiliar_score} for m, r in rules.items()},
        "leakage_vs_staining": {"temporal": pair["clear_mamba"], "single_frame": pair["single_frame"]},
        "temporal_beats_single_frame": (pair["clear_mamba"] or 0) > (pair["single_frame"] or 0),
    }
