"""Figures and markdown tables of the experiments (matplotlib is imported inside each function)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

OOD_TITLES = {
    "mnist_test": "MNIST test (in-distribution)",
    "fashion": "Fashion-MNIST",
    "animal": "Animal-MNIST",
    "letters": "letters A-J (semi-synthetic)",
}
METHOD_TITLES = {
    "softmax": "softmax",
    "mc_dropout": "MC Dropout",
    "ensemble": "deep ensemble",
    "edl_mll": "EDL, max-likelihood",
    "edl_ce": "EDL, CE Bayes risk",
    "edl_sse": "EDL, SE Bayes risk",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    # atomic: render to a temporary file, then rename
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def entropy_cdf(entropies: dict[str, dict[str, np.ndarray]], path: Path, num_classes: int = 10) -> None:
    """Empirical CDF of predictive entropy per set (EDL paper, Fig. 3): on OOD sets lower-right is better."""
    plt = _pyplot()
    sets = list(next(iter(entropies.values())))
    fig, axes = plt.subplots(1, len(sets), figsize=(4.2 * len(sets), 3.8), squeeze=False)
    for ax, name in zip(axes[0], sets):
        for method, per_set in entropies.items():
            values = np.sort(np.asarray(per_set[name]))
            ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post",
                    label=METHOD_TITLES.get(method, method))
        ax.set_xlim(0, math.log(num_classes))
        ax.set_ylim(0, 1.01)
        ax.set_xlabel("predictive entropy (nats)")
        ax.set_title(OOD_TITLES.get(name, name))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of images")
    axes[0][-1].legend(fontsize=8, loc="upper left")
    fig.suptitle("Empirical CDF of predictive entropy: on MNIST left is better, on OOD sets right is better", y=1.02)
    _save(fig, path)
    plt.close(fig)


def rotating_digit(rotation: dict, path: Path, threshold: float = 0.2) -> None:
    """The rotated "1": p of every class that reaches ``threshold`` at some angle, and K/S for EDL."""
    plt = _pyplot()
    methods = rotation["methods"]
    angles = np.asarray(rotation["angles"])
    images = rotation["images"]
    fig = plt.figure(figsize=(10, 2.2 + 2.4 * len(methods)))
    grid = fig.add_gridspec(len(methods) + 1, 1, height_ratios=[0.55] + [1.0] * len(methods), hspace=0.3)
    strip = fig.add_subplot(grid[0])
    strip.imshow(np.concatenate(list(images), axis=1), cmap="gray")
    strip.set_axis_off()
    strip.set_title(f"test image #{rotation['test_index']} rotated 0-180 degrees")
    colours = plt.get_cmap("tab10")
    for row, (name, entry) in enumerate(methods.items(), start=1):
        ax = fig.add_subplot(grid[row])
        probs = np.asarray(entry["probs"])
        for k in np.nonzero(probs.max(0) >= threshold)[0]:
            ax.plot(angles, probs[:, k], marker="o", ms=3, color=colours(k), label=f"p({k})")
        if "vacuity" in entry:
            ax.plot(angles, entry["vacuity"], "k--", marker="s", ms=3, label="K/S (vacuity)")
        for angle, predicted in zip(angles, entry["predicted"]):
            ax.annotate(str(predicted), (angle, 1.04), ha="center", fontsize=7, annotation_clip=False)
        ax.set_ylim(0, 1.0)
        ax.set_xlim(angles[0] - 3, angles[-1] + 3)
        ax.set_ylabel(METHOD_TITLES.get(name, name), fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelbottom=row == len(methods))
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_xlabel("rotation (degrees); predicted class printed above each point")
    _save(fig, path)
    plt.close(fig)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_tables(results: dict[str, dict], ood_sets) -> str:
    """The headline table (natural scores) and the OOD AUROC of every method under entropy and MSP."""
    head = ["method", "score", "accuracy", "ECE", "NLL", "median conf. wrong / right", "misclass. AUROC", "AURC"]
    head += [f"OOD AUROC / FPR95 {OOD_TITLES.get(s, s).split(' ')[0]}" for s in ood_sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [METHOD_TITLES.get(name, name), r["score"], f"{100 * r['accuracy']:.2f} %", _fmt(r["ece"]),
                 _fmt(r["nll"]), f"{_fmt(r['wrong_confidence_median'], 2)} / {_fmt(r['right_confidence_median'])}",
                 _fmt(r["misclassification_auroc"]), _fmt(1000 * r["aurc"], 2) + " e-3"]
        cells += [f"{_fmt(r['ood'][s]['auroc'])} / {_fmt(r['ood'][s]['fpr95'], 2)}" for s in ood_sets]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "OOD AUROC of every method under the same score (entropy / MSP):", ""]
    head = ["method", *[OOD_TITLES.get(s, s) for s in ood_sets], "Spearman(natural score, MSP) on MNIST test"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        by = {"entropy": r.get("ood_entropy", r["ood"]), "msp": r.get("ood_msp", r["ood"])}
        cells = [METHOD_TITLES.get(name, name)]
        cells += [f"{_fmt(by['entropy'][s]['auroc'])} / {_fmt(by['msp'][s]['auroc'])}" for s in ood_sets]
        cells.append(_fmt(r["spearman_with_msp"], 4))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def learning_curves(curves: dict[str, list[dict]], path: Path, title: str) -> None:
    """Accuracy against labels, one line per acquisition (mean over seeds) with a min-max band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    styles, markers = ["-", "--", "-.", ":"], "os^vD<>"
    drawn: dict[str, np.ndarray] = {}
    for i, (name, runs) in enumerate(curves.items()):
        labels = np.asarray(runs[0]["labels"])
        acc = np.asarray([r["accuracy"] for r in runs]) * 100
        mean = acc.mean(0)
        # arms that picked the same images (e.g. mean KL and BALD, equal by identity) would hide each other
        same = [other for other, m in drawn.items() if m.shape == acc.shape and np.allclose(m, acc)]
        label = f"{name} ({len(runs)} seeds)" + (f" = {', '.join(same)}" if same else "")
        drawn[name] = acc
        (line,) = ax.plot(labels, mean, linestyle=styles[i % 4], marker=markers[i % 7], ms=4, label=label)
        if len(runs) > 1:
            ax.fill_between(labels, acc.min(0), acc.max(0), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("labelled examples")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
