"""Pool-based active learning on MNIST: which uncertainty picks the labels that help most?

Protocol (Gal, Islam & Ghahramani 2017, shortened): a balanced start of ``initial_per_class`` labelled digits
per class; each round a fresh LeNet is trained for a fixed number of steps on the labelled set, tested, and
the ``acquire`` highest-scoring unlabelled pool images are labelled. Softmax LeNets score the pool with
``mc_samples`` MC Dropout passes of the head (max entropy, BALD, variation ratio, and query-by-committee's
vote entropy and mean KL with the passes as the committee); the ``vacuity`` arm trains an evidential LeNet
(its accuracy is that model's); ``random`` is the baseline. For one seed every arm starts from the same
labelled set and every round's network from the same initial weights, so the arms differ only in what
they labelled.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from clearmamba.active import ACQUISITIONS, acquisition_scores, select_top_k
from clearmamba.atomic import atomic_write_text
from clearmamba.experiments.lenet import lenet
from clearmamba.experiments.sources import to_tensor
from clearmamba.training import LABML_RECIPE, fit, predict
from clearmamba.uncertainty import PiecewiseLinear, create_method


@dataclass(frozen=True)
class ActiveConfig:
    acquisitions: tuple[str, ...] = ("random", "entropy", "bald", "variation_ratio", "vote_entropy", "mean_kl",
                                     "vacuity")
    seeds: tuple[int, ...] = (0, 1)
    initial_per_class: int = 20
    acquire: int = 50
    rounds: int = 6
    pool_size: int | None = 10000
    test_size: int | None = 5000
    train_steps: int = 150
    batch_size: int = 64
    mc_samples: int = 16
    lr: float = 1e-3
    weight_decay: float = 5e-3
    edl_loss: str = "mll"
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides) -> ActiveConfig:
        """CI size: 3 arms, one seed, two rounds of 10 on a 600-image pool."""
        base = cls(acquisitions=("random", "bald", "vacuity"), seeds=(0,), initial_per_class=2, acquire=10,
                   rounds=2, pool_size=600, test_size=300, train_steps=15, batch_size=32, mc_samples=4, quick=True)
        return replace(base, **overrides)

    def __post_init__(self) -> None:
        unknown = [a for a in self.acquisitions if a not in ACQUISITIONS]
        if unknown:
            raise ValueError(f"unknown acquisition(s) {unknown}; expected some of {sorted(ACQUISITIONS)}")
        if self.initial_per_class < 1 or self.acquire < 1 or self.rounds < 0 or self.train_steps < 1:
            raise ValueError("initial_per_class, acquire and train_steps must be >= 1 and rounds >= 0")


def balanced_start(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` random indices of every class (sorted), the usual balanced initial labelled set."""
    rng = np.random.default_rng(seed)
    picked = []
    for k in np.unique(labels):
        members = np.flatnonzero(labels == k)
        if len(members) < per_class:
            raise ValueError(f"class {k} has {len(members)} pool images, fewer than initial_per_class={per_class}")
        picked.append(rng.choice(members, per_class, replace=False))
    return np.sort(np.concatenate(picked))


def _head(acquisition: str) -> str:
    return "evidential" if acquisition == "vacuity" else "softmax"


def _fit(config: ActiveConfig, head: str, x: torch.Tensor, y: torch.Tensor, seed: int):
    steps_per_epoch = -(-len(x) // config.batch_size)
    epochs = config.train_steps / steps_per_epoch
    if head == "evidential":
        schedule = PiecewiseLinear(total_epochs=epochs)  # labml's (0,0) -> (0.2,0.01) -> (1,1)
        method = create_method("evidential", loss=config.edl_loss, kl_weight=1.0, annealing=schedule,
                               remove_target=True)  # fmt: skip
    else:
        method = create_method("softmax")
    recipe = LABML_RECIPE.with_(epochs=epochs, batch_size=config.batch_size, lr=config.lr,
                                weight_decay=config.weight_decay, seed=seed)  # fmt: skip
    # fit seeds the initial weights with `seed`: the same for every arm at this seed and round
    return fit(method, lambda: lenet(head), (x, y), recipe).model


def pool_scores(config: ActiveConfig, acquisition: str, model, pool_x: torch.Tensor, seed: int) -> torch.Tensor:
    """Acquisition score of every pool image (higher = label it first)."""
    from clearmamba.uncertainty.mc_dropout import MCDropout

    generator = torch.Generator().manual_seed(seed)
    if acquisition == "random":
        return acquisition_scores("random", torch.empty(1, len(pool_x), 1), generator)
    if acquisition == "vacuity":
        return acquisition_scores("vacuity", predict(model, pool_x, 1000).alpha)
    torch.manual_seed(seed)
    members = predict(MCDropout(model, num_samples=config.mc_samples, mode="head").eval(), pool_x, 1000).members
    return acquisition_scores(acquisition, members)


def simulate_arm(config: ActiveConfig, acquisition: str, seed: int, data: dict, cache: dict,
                 on_round: Callable[[], None] | None = None) -> dict:
    """One learning curve: labels used and test accuracy after each round."""
    pool_x, pool_y, test_x, test_y = data["pool_x"], data["pool_y"], data["test_x"], data["test_y"]
    labelled = torch.from_numpy(balanced_start(pool_y.numpy(), config.initial_per_class, seed))
    head = _head(acquisition)
    curve = {"acquisition": acquisition, "seed": seed, "labels": [], "accuracy": [], "picked_classes": []}
    for round_ in range(config.rounds + 1):
        key = (head, seed)
        if round_ > 0 or key not in cache:
            model = _fit(config, head, pool_x[labelled], pool_y[labelled], seed * 1000 + round_)
            accuracy = predict(model, test_x, 1000).predicted.eq(test_y).float().mean().item()
            if round_ == 0:  # round 0 is the same for every arm of one head at one seed: train it once
                cache[key] = (model, accuracy)
        else:
            model, accuracy = cache[key]
        curve["labels"].append(len(labelled))
        curve["accuracy"].append(accuracy)
        if round_ < config.rounds:
            scores = pool_scores(config, acquisition, model, pool_x, seed * 1000 + round_)
            new = select_top_k(scores, config.acquire, exclude=labelled)
            curve["picked_classes"].append(np.bincount(pool_y[new].numpy(), minlength=10).tolist())
            labelled = torch.cat([labelled, new]).sort().values
        if on_round is not None:
            on_round()
    return curve


def load_mnist_pool(config: ActiveConfig, seed: int = 0) -> dict:
    from clearmamba.experiments.sources import load_source

    def take(split: str, size: int | None, offset: int):
        x, y = load_source("mnist", split)
        if size is not None and size < len(x):
            index = np.sort(np.random.default_rng(seed + offset).choice(len(x), size, replace=False))
            x, y = x[index], y[index]
        return to_tensor(x), torch.from_numpy(y)

    pool_x, pool_y = take("train", config.pool_size, 0)
    test_x, test_y = take("test", config.test_size, 1)
    return {"pool_x": pool_x, "pool_y": pool_y, "test_x": test_x, "test_y": test_y}


def summarize_curves(curves: dict[str, list[dict]]) -> dict[str, dict]:
    """Per arm: mean final accuracy, its spread over seeds, and the mean area under the learning curve."""
    out = {}
    for name, runs in curves.items():
        acc = np.asarray([r["accuracy"] for r in runs])
        labels = np.asarray(runs[0]["labels"], dtype=float)
        # mean accuracy over the label range (trapezoid area / width), a one-number learning-curve summary
        width = labels[-1] - labels[0]
        area = np.trapezoid(acc, labels, axis=1) / width if width > 0 else acc[:, 0]
        out[name] = {"final_labels": int(labels[-1]), "final_accuracy_mean": float(acc[:, -1].mean()),
                     "final_accuracy_min": float(acc[:, -1].min()), "final_accuracy_max": float(acc[:, -1].max()),
                     "mean_accuracy_over_curve": float(area.mean()), "seeds": len(runs)}
    return out


def run(config: ActiveConfig, out_dir: str | os.PathLike, progress=None, log: Callable[[str], None] = print) -> dict:
    """Run every arm for every seed; write ``curves.json``, ``summary.md`` and ``learning_curves.png``."""
    from clearmamba.experiments import figures

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_mnist_pool(config)
    total = len(config.acquisitions) * len(config.seeds) * (config.rounds + 1)
    task = progress.add_task("active learning rounds", total=total) if progress is not None else None
    on_round = (lambda: progress.advance(task)) if progress is not None else None
    curves: dict[str, list[dict]] = {a: [] for a in config.acquisitions}
    for seed in config.seeds:
        cache: dict = {}
        for acquisition in config.acquisitions:
            curve = simulate_arm(config, acquisition, seed, data, cache, on_round)
            curves[acquisition].append(curve)
            log(f"seed {seed} {acquisition}: " + ", ".join(
                f"{n}:{100 * a:.1f}%" for n, a in zip(curve["labels"], curve["accuracy"])))
    summary = summarize_curves(curves)
    title = (f"MNIST active learning: {config.initial_per_class}/class start, +{config.acquire} per round, "
             f"pool {len(data['pool_x'])}")
    figures.learning_curves(curves, out / "learning_curves.png", title)
    payload = {"config": asdict(config), "torch_threads": torch.get_num_threads(),
               "wall_seconds": time.perf_counter() - start, "summary": summary, "curves": curves}
    atomic_write_text(out / "curves.json", json.dumps(payload, indent=2))
    lines = ["| acquisition | labels | final accuracy, mean (min-max over seeds) | mean accuracy over the curve |",
             "|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['final_labels']} | {100 * s['final_accuracy_mean']:.2f} % "
                     f"({100 * s['final_accuracy_min']:.2f}-{100 * s['final_accuracy_max']:.2f}) | "
                     f"{100 * s['mean_accuracy_over_curve']:.2f} % |")
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return payload
