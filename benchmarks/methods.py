"""Compare the uncertainty family on the built-in angiography data: one backbone, one budget, one table.

    python -m benchmarks.methods            # writes benchmarks/results/methods.json and docs/methods.md
    python -m benchmarks.methods --quick    # a smoke run (tiny data, 1 epoch)

Every method goes through the same generic loop of ``clearmamba.uncertainty.methods`` (no branch on the
method), on MedMamba-nano with the exam's frames stacked as input channels. Each model (each ensemble member)
gets the same number of epochs; an ensemble therefore costs M trainings, which the table states.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from clearmamba.atomic import atomic_write_text
from clearmamba.evaluation import auroc, summarize
from clearmamba.training import TrainConfig, fit
from clearmamba.uncertainty import Prediction, SplitConformal, TemperatureScaler, coverage, create_method, mean_set_size

ROOT = Path(__file__).resolve().parents[1]

# name in the table -> (registry name, options); the score used for OOD detection besides entropy
METHOD_ROWS = {
    "softmax": ("softmax", {}),
    "evidential (RaP)": ("evidential", {}),  # RaP's default: softplus evidence, KL 0.05 fixed, target kept
    "evidential (exp evidence)": ("evidential", {"evidence": "exp"}),
    "mc_dropout T=16 (head-only)": ("mc_dropout", {"num_samples": 16, "mode": "head", "p": 0.3}),
    "ensemble M=3": ("ensemble", {"num_members": 3}),
    "swag S=8": ("swag", {"num_samples": 8, "collect_from": 0.5, "max_rank": 5}),
    "variational head S=8": ("variational", {"num_samples": 8, "kl_weight": 0.1}),
    "heteroscedastic": ("heteroscedastic", {"num_samples": 32}),
    "heteroscedastic + mc_dropout T=8": ("heteroscedastic", {"num_samples": 32, "mc_dropout": 8, "p": 0.3}),
    "cal": ("cal", {"num_attentions": 8}),
}
NATIVE_SCORE = {
    "softmax": "msp",
    "evidential": "vacuity",
    "mc_dropout": "mutual_info",
    "ensemble": "mutual_info",
    "swag": "mutual_info",
    "variational": "mutual_info",
    "heteroscedastic": "entropy",
    "cal": "msp",
}


def exams_to_images(exam_set) -> tuple[torch.Tensor, torch.Tensor]:
    # [n, t, c, h, w] -> [n, t*c, h, w]: a 2D backbone sees the frame sequence as channels
    return exam_set.frames.flatten(1, 2).contiguous(), exam_set.labels


def batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def build_backbone(in_chans: int, num_classes: int, patch_size: int, stem: str = "conv"):
    from clearmamba.models import create_model

    # MedMamba-nano cut to 3 stages: 32 px / patch 4 / 3 stages keeps a 2x2 last feature map for CAL; the conv
    # stem because the published linear patchify memorises at this size (docs/design/why-the-demo-learns.md)
    return create_model(
        "medmamba_nano",
        in_chans=in_chans,
        num_classes=num_classes,
        patch_size=patch_size,
        dims=(16, 32, 64),
        depths=(1, 1, 1),
        stem=stem,
    )


def train_method(name, options, data, args, progress):
    """Every method through clearmamba.training.fit, the one loop (no branch on the method)."""
    x, y = data["train"]
    method = create_method(name, **options)
    # clearmamba.training's recipe: AdamW, one epoch of warm-up, cosine decay, gradient norm clipped at 1
    recipe = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, weight_decay=0.05, patience=0,
                         seed=args.seed)  # fmt: skip
    result = fit(method, lambda: build_backbone(x.shape[1], args.classes, args.patch, args.stem), (x, y), recipe)
    for member, history in enumerate(result.history):
        progress(f"  {name} member {member}: final loss {history[-1]['train_loss']:.3f}")
    return method, result.model


def predict_all(method, model, x, batch) -> Prediction:
    return Prediction.cat([method.predict(model, xb) for xb, _ in batches(x, torch.zeros(len(x)), batch)])


def classification_metrics(prediction: Prediction, labels: torch.Tensor) -> dict:
    summary = summarize(prediction.probs, labels, {"msp": prediction.score("msp")})
    keys = ("accuracy", "ece", "nll", "wrong_confidence_median")
    return {**{k: summary[k] for k in keys}, "aurc": summary["aurc/msp"]}


def ood_auroc(in_dist: Prediction, ood: Prediction, score: str) -> float:
    scores = torch.cat([in_dist.score(score), ood.score(score)])
    is_ood = torch.cat([torch.zeros(len(in_dist)), torch.ones(len(ood))])
    return auroc(scores, is_ood)


def time_predict(method, model, x, batch, repeats) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_all(method, model, x, batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, 1 epoch, no docs written")
    parser.add_argument("--n-train", type=int, default=2400)
    parser.add_argument("--n-eval", type=int, default=300, help="exams per val/test/held-out/OOD set")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--patch", type=int, default=4)
    parser.add_argument("--stem", default="conv", choices=("conv", "patch"), help="conv stem or MedMamba's patchify")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHOD_ROWS), help="comma-separated rows of the table")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "methods.json"))
    parser.add_argument("--doc", default=str(ROOT / "docs" / "methods.md"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_eval, args.epochs = 36, 12, 1
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.time()

    def progress(message):
        print(f"[{time.time() - start:6.1f}s] {message}", flush=True)

    from clearmamba.data import SimulatorConfig, make_builtin_splits

    config = SimulatorConfig(size=args.size)
    sets = make_builtin_splits(config, args.n_train, args.n_eval, args.n_eval, args.n_eval, args.n_eval, seed=args.seed)
    args.classes = len(config.classes)
    data = {name: exams_to_images(s) for name, s in sets.items()}
    progress(f"data: { {k: tuple(v[0].shape) for k, v in data.items()} }")
    ood_sets = [k for k in data if k.startswith("ood_")]

    results = {}
    cost_reference = None
    for row in args.methods.split(","):
        name, options = METHOD_ROWS[row]
        t0 = time.time()
        method, model = train_method(name, options, data, args, progress)
        train_seconds = time.time() - t0
        predictions = {k: predict_all(method, model, v[0], args.batch) for k, v in data.items() if k != "train"}
        test = predictions["test"]
        entry = {"method": name, "options": options, "train_seconds": round(train_seconds, 1)}
        entry.update(classification_metrics(test, data["test"][1]))
        if "test_heldout_device" in predictions:
            entry["heldout_device_accuracy"] = classification_metrics(
                predictions["test_heldout_device"], data["test_heldout_device"][1]
            )["accuracy"]
        native = NATIVE_SCORE[name]
        entry["ood_score"] = native
        entry["ood_auroc"] = {k: ood_auroc(test, predictions[k], native) for k in ood_sets}
        entry["ood_auroc_entropy"] = {k: ood_auroc(test, predictions[k], "entropy") for k in ood_sets}
        # post-hoc temperature (or evidence) scaling fitted on val
        scaler = TemperatureScaler().fit(predictions["val"], data["val"][1])
        scaled = classification_metrics(scaler(test), data["test"][1])
        entry["temperature"] = round(scaler.temperature, 3)
        entry["ts_ece"], entry["ts_nll"] = scaled["ece"], scaled["nll"]
        for score in ("lac", "aps"):
            conformal = SplitConformal(0.1, score).fit(predictions["val"].probs, data["val"][1])
            sets_ = conformal.predict_sets(test.probs)
            entry[f"{score}_coverage"] = coverage(sets_, data["test"][1])
            entry[f"{score}_set_size"] = mean_set_size(sets_)
        seconds = time_predict(method, model, data["test"][0], args.batch, repeats=3)
        if name == "softmax":
            cost_reference = seconds
        entry["predict_seconds"] = seconds
        results[row] = entry
        progress(f"{row}: acc {entry['accuracy']:.3f} ece {entry['ece']:.3f} train {train_seconds:.0f}s")
    for entry in results.values():
        entry["relative_cost"] = entry["predict_seconds"] / cost_reference if cost_reference else None

    report = {
        "command": "python -m benchmarks.methods " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "doc")},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "wall_seconds": round(time.time() - start, 1),
        "results": results,
    }
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.out), json.dumps(report, indent=2), mode=0o644)
        atomic_write_text(Path(args.doc), markdown(report, ood_sets) + hand_written_tail(Path(args.doc)), mode=0o644)
    progress(f"done in {report['wall_seconds']}s")
    return report


HAND_WRITTEN = "## Reading this run"


def hand_written_tail(doc: Path) -> str:
    """The doc's hand-written reading of a run (from ``HAND_WRITTEN`` on), kept when a rerun rewrites the tables."""
    text = doc.read_text() if doc.is_file() else ""
    return "\n" + text[text.index(HAND_WRITTEN) :] if HAND_WRITTEN in text else ""


def markdown(report: dict, ood_sets: list[str]) -> str:
    s = report["settings"]
    ood_names = [k.removeprefix("ood_") for k in ood_sets]
    header = ["method", "acc", "held-out dev. acc", "ECE", "NLL", "wrong conf. (median)", "AURC"]
    header += [f"OOD AUROC {n}" for n in ood_names] + ["OOD score", "cost vs softmax", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, e in report["results"].items():
        cells = [
            row,
            f"{e['accuracy']:.3f}",
            f"{e.get('heldout_device_accuracy', float('nan')):.3f}",
            f"{e['ece']:.3f}",
            f"{e['nll']:.3f}",
            f"{e['wrong_confidence_median']:.3f}",
            f"{e['aurc']:.3f}",
        ]
        cells += [f"{e['ood_auroc'][k]:.3f}" for k in ood_sets]
        cells += [e["ood_score"], f"{e['relative_cost']:.2f}x", f"{e['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    post = [
        "| method | T | ECE after | NLL after | LAC cov. | LAC size | APS cov. | APS size | OOD AUROC (entropy) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row, e in report["results"].items():
        entropy = ", ".join(f"{k.removeprefix('ood_')} {v:.3f}" for k, v in e["ood_auroc_entropy"].items())
        post.append(
            f"| {row} | {e['temperature']:.2f} | {e['ts_ece']:.3f} | {e['ts_nll']:.3f} | {e['lac_coverage']:.3f} | "
            f"{e['lac_set_size']:.2f} | {e['aps_coverage']:.3f} | {e['aps_set_size']:.2f} | {entropy} |"
        )
    return "\n".join(
        [
            "# Uncertainty methods compared on the built-in angiography data",
            "",
            f"Command: `{report['command'].strip()}` (wall time {report['wall_seconds']:.0f} s on "
            f"{report['machine']['platform']}, torch {report['machine']['torch']}, "
            f"{report['machine']['threads']} threads, CPU shared with other jobs).",
            "",
            f"Setup: built-in simulator (six classes, 8 frames of 1x{s['size']}x{s['size']}, frames stacked as "
            f"channels), {s['n_train']} training exams, {s['n_eval']} exams in each of val / test / held-out device"
            f" / each OOD set. Backbone MedMamba-nano cut to 3 stages (dims 16/32/64, one block each, "
            f"{s.get('stem', 'patch')} stem, patch {s['patch']}), AdamW lr {s['lr']} (weight decay 0.05, one epoch "
            f"of warm-up, cosine decay, gradient norm clipped at 1), batch {s['batch']},"
            f" {s['epochs']} epochs per model (each ensemble member too, so the ensemble trains M times), seed "
            f"{s['seed']}. Every method runs through the same loop of `clearmamba.uncertainty.methods`.",
            "",
            "Columns: accuracy on test; accuracy on the held-out device; ECE (15 bins, torchmetrics); NLL; median "
            "confidence of wrong answers; AURC with 1 - max p; OOD AUROC (test vs each OOD set) with the method's "
            "own score (`OOD score`); inference time over the test set relative to the softmax model's forward.",
            "",
            *lines,
            "",
            "Post-hoc on top of each method, fitted on val: temperature scaling (evidence scaling for the "
            "evidential head, member-wise for sampled methods) and split-conformal sets at alpha = 0.1; plus "
            "OOD AUROC with predictive entropy for every method.",
            "",
            *post,
            "",
            "The variational head uses a KL weight of 0.1 (a tempered ELBO): with a few hundred exams the full KL "
            "to the N(0, 1) prior swamps the data term. "
            "Read with care: small data and one seed; with 300 test exams one standard error of accuracy is "
            "1-2 points.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
