"""Evidential deep learning on MNIST (Sensoy et al. 2018, labml's recipe) against softmax, MC Dropout and a
deep ensemble, with OOD detection on Fashion-MNIST, Animal-MNIST and letters A-J (semi-synthetic).

Every method is scored with the uncertainty it naturally uses (higher = more uncertain): softmax ``msp``
(1 - max p), MC Dropout and the ensemble ``mutual_info``, EDL ``vacuity`` (K / S). The softmax LeNet is
also ensemble member 0 and the network MC Dropout samples, so the three share one training run.
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

from clearmamba.atomic import atomic_write_text
from clearmamba.evaluation import ood_metrics_by_set, spearman, summarize
from clearmamba.experiments.lenet import lenet
from clearmamba.experiments.rotation import rotation_series
from clearmamba.experiments.sources import MNIST_MEAN, MNIST_STD, to_tensor
from clearmamba.training import LABML_RECIPE, EvidenceStatistics, StepProgress, TrainConfig, fit, predict
from clearmamba.uncertainty import PiecewiseLinear, Prediction, create_method, get_evidence_fn
from clearmamba.uncertainty.methods import Method

EDL_LOSSES = ("mll", "ce", "sse")
OOD_SETS = ("fashion", "animal", "letters")
NATURAL_SCORE = {"softmax": "msp", "mc_dropout": "mutual_info", "ensemble": "mutual_info"}


@dataclass(frozen=True)
class EDLMnistConfig:
    epochs: float = 3.0
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 5e-3
    decoupled_weight_decay: bool = True
    losses: tuple[str, ...] = EDL_LOSSES
    evidence: str = "softplus"
    kl_weight: float = 1.0  # x labml's (0, 0) -> (0.2, 0.01) -> (1, 1) schedule over training
    kl_points: tuple[tuple[float, float], ...] = ((0.0, 0.0), (0.2, 0.01), (1.0, 1.0))
    ensemble_size: int = 5
    mc_samples: int = 32
    ood_sets: tuple[str, ...] = OOD_SETS
    train_size: int | None = None  # None = all 60,000
    test_size: int | None = None  # None = all 10,000
    ood_size: int | None = None  # per OOD set; None = all
    letters_per_class: int = 1000
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides) -> EDLMnistConfig:
        """CI size: 1,000 training digits, one epoch, 2 ensemble members, T = 8."""
        base = cls(epochs=1.0, batch_size=64, ensemble_size=2, mc_samples=8, train_size=1000, test_size=500,
                   ood_size=300, letters_per_class=30, quick=True)
        return replace(base, **overrides)

    def train_config(self, seed: int) -> TrainConfig:
        return LABML_RECIPE.with_(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                  weight_decay=self.weight_decay, decoupled_weight_decay=self.decoupled_weight_decay,
                                  seed=seed)  # fmt: skip

    def __post_init__(self) -> None:
        if self.ensemble_size < 1 or self.mc_samples < 2:
            raise ValueError(f"ensemble_size must be >= 1 and mc_samples >= 2, got {self.ensemble_size}, "
                             f"{self.mc_samples}")
        unknown = [s for s in self.ood_sets if s not in OOD_SETS]
        if unknown:
            raise ValueError(f"unknown OOD set(s) {unknown}; expected some of {OOD_SETS}")
        bad = [loss for loss in self.losses if loss not in EDL_LOSSES]
        if bad:
            raise ValueError(f"unknown EDL loss(es) {bad}; expected some of {EDL_LOSSES}")
        get_evidence_fn(self.evidence)  # clear error for an unknown activation

    def methods(self) -> list[str]:
        # a one-member "ensemble" has no disagreement (mutual information 0): it is left out
        ensemble = ["ensemble"] if self.ensemble_size > 1 else []
        return ["softmax", "mc_dropout", *ensemble, *[f"edl_{loss}" for loss in self.losses]]


def natural_score(method: str) -> str:
    return NATURAL_SCORE.get(method, "vacuity")


# ---- data ------------------------------------------------------------------------------------------------
def _subset(images: np.ndarray, labels: np.ndarray, size: int | None, seed: int):
    if size is None or size >= len(images):
        return images, labels
    index = np.sort(np.random.default_rng(seed).choice(len(images), size, replace=False))
    return images[index], labels[index]


def load_ood_set(name: str, letters_per_class: int = 1000, seed: int = 0) -> np.ndarray:
    """uint8 images of one OOD set; a missing source raises MissingSourceError with the install command."""
    from clearmamba.experiments.sources import load_source

    if name == "fashion":
        return load_source("fashion", "test")[0]
    if name == "animal":
        return load_source("animal")[0]
    if name == "letters":
        from clearmamba.experiments.letters import render_letters

        return render_letters(letters_per_class, seed=seed)[0]
    raise ValueError(f"unknown OOD set {name!r}; expected one of {OOD_SETS}")


def load_data(config: EDLMnistConfig) -> dict:
    from clearmamba.experiments.sources import load_source, require

    for name in ("mnist", *[s for s in config.ood_sets if s != "letters"]):
        require(name)  # fail before any work when a source is missing
    train_x, train_y = _subset(*load_source("mnist", "train"), config.train_size, config.seed)
    test_x, test_y = _subset(*load_source("mnist", "test"), config.test_size, config.seed + 1)
    ood = {}
    for i, name in enumerate(config.ood_sets):
        images = load_ood_set(name, config.letters_per_class, config.seed)
        ood[name] = to_tensor(_subset(images, np.zeros(len(images)), config.ood_size, config.seed + 2 + i)[0])
    return {
        "train": (to_tensor(train_x), torch.from_numpy(train_y)),
        "test": (to_tensor(test_x), torch.from_numpy(test_y)),
        "test_raw": test_x,
        "ood": ood,
    }


# ---- training --------------------------------------------------------------------------------------------
def edl_method(config: EDLMnistConfig, loss: str) -> Method:
    """labml's EDL objective: ``loss`` + KL on the non-target evidence, weight along ``kl_points`` over training."""
    schedule = PiecewiseLinear(config.kl_points, total_epochs=config.epochs)
    return create_method("evidential", evidence=config.evidence, loss=loss, kl_weight=config.kl_weight,
                         annealing=schedule, remove_target=True)  # fmt: skip


def _stats_line(name: str, seconds: float, last: dict) -> str:
    parts = [f"{name}: {seconds:.0f} s", f"train accuracy {last['accuracy']:.4f}",
             f"mean p right/wrong {last['p_right']:.3f}/{last.get('p_wrong', float('nan')):.3f}"]
    if "u_right" in last:
        parts.append(f"mean K/S right/wrong {last['u_right']:.3f}/{last.get('u_wrong', float('nan')):.3f}")
    return ", ".join(parts)


def train_models(config: EDLMnistConfig, data: dict, progress=None, log: Callable[[str], None] = print):
    """Train the softmax LeNets (ensemble members; member 0 is "softmax") and one EDL LeNet per loss."""
    models, logs = {}, {}

    def train_one(name: str, method: Method, head: str, seed: int) -> None:
        callbacks = [EvidenceStatistics()] + ([StepProgress(progress, f"train {name}")] if progress else [])
        result = fit(method, lambda: lenet(head, config.evidence), data["train"], config.train_config(seed),
                     callbacks=callbacks)  # fmt: skip
        logs[name] = {"history": result.history[0], "seconds": result.seconds}
        models[name] = result.model
        log(_stats_line(name, result.seconds, result.history[0][-1]))

    for m in range(config.ensemble_size):
        train_one(f"softmax_{m}", create_method("softmax"), "softmax", config.seed + m)
    for loss in config.losses:
        train_one(f"edl_{loss}", edl_method(config, loss), "evidential", config.seed)
    return models, logs


def method_models(config: EDLMnistConfig, models: dict) -> dict[str, Callable]:
    """Name -> callable returning a Prediction, for every method compared."""
    from clearmamba.uncertainty.ensemble import DeepEnsemble
    from clearmamba.uncertainty.mc_dropout import MCDropout

    members = [models[f"softmax_{m}"] for m in range(config.ensemble_size)]
    out = {
        "softmax": members[0],
        # the trunk is deterministic, so only dropout + fc 10 is sampled T times
        "mc_dropout": MCDropout(members[0], num_samples=config.mc_samples, mode="head").eval(),
        "ensemble": DeepEnsemble(members).eval() if len(members) > 1 else None,
    }
    out.update({f"edl_{loss}": models[f"edl_{loss}"] for loss in config.losses})
    return {name: out[name] for name in config.methods()}


# ---- evaluation ------------------------------------------------------------------------------------------
def evaluate_method(prediction: Prediction, labels: torch.Tensor, ood: dict[str, Prediction], score: str) -> dict:
    """Headline metrics of one method with its natural ``score`` (and entropy / MSP for comparison)."""
    s_in = prediction.score(score)
    summary = summarize(prediction.probs, labels, {score: s_in})
    result = {
        "score": score,
        "accuracy": summary["accuracy"],
        "ece": summary["ece"],
        "nll": summary["nll"],
        "wrong_confidence_median": summary["wrong_confidence_median"],
        "right_confidence_median": summary["right_confidence_median"],
        "misclassification_auroc": summary[f"misclassification_auroc/{score}"],
        "aurc": summary[f"aurc/{score}"],
        "spearman_with_msp": spearman(s_in, prediction.score("msp")),
        "ood": ood_metrics_by_set(s_in, {k: p.score(score) for k, p in ood.items()}),
    }
    for alternative in ("entropy", "msp"):
        if alternative != score:
            scores_out = {k: p.score(alternative) for k, p in ood.items()}
            result[f"ood_{alternative}"] = ood_metrics_by_set(prediction.score(alternative), scores_out)
    return result


def rotating_digit(models: dict[str, Callable], raw_test: np.ndarray, labels: torch.Tensor, digit: int = 1) -> dict:
    """Probabilities (and K/S) of a test-set ``digit`` turned 0-180 degrees in 10-degree steps."""
    index = int(torch.nonzero(labels == digit)[0, 0])
    image = torch.from_numpy(raw_test[index]).float().div(255.0).unsqueeze(0)  # 1 28 28, background 0
    rotated, angles = rotation_series(image, 180.0, 10.0)
    normalised = (rotated - MNIST_MEAN) / MNIST_STD
    out = {"test_index": index, "angles": angles.tolist(), "images": rotated[:, 0].numpy(), "methods": {}}
    for name, model in models.items():
        p = predict(model, normalised, 1000)
        entry = {"probs": p.probs.tolist(), "predicted": p.predicted.tolist()}
        if p.evidence is not None:
            entry["vacuity"] = p.score("vacuity").tolist()
        out["methods"][name] = entry
    return out


def _write_json(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))


def run(config: EDLMnistConfig, out_dir: str | os.PathLike, progress=None, log: Callable[[str], None] = print) -> dict:
    """Train, evaluate, write ``results.json``, ``table.md``, ``entropy_cdf.png`` and ``rotating_digit.png``."""
    from clearmamba.experiments import figures

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(config)
    log(f"data: train {tuple(data['train'][0].shape)}, test {tuple(data['test'][0].shape)}, "
        + ", ".join(f"{k} {len(v)}" for k, v in data["ood"].items()))
    models, logs = train_models(config, data, progress, log)
    methods = method_models(config, models)
    test_x, test_y = data["test"]
    results, entropies = {}, {}
    for name, model in methods.items():
        tic = time.perf_counter()
        prediction = predict(model, test_x, 1000)
        ood = {k: predict(model, x, 1000) for k, x in data["ood"].items()}
        results[name] = evaluate_method(prediction, test_y, ood, natural_score(name))
        results[name]["inference_seconds"] = time.perf_counter() - tic
        # the in-distribution panel shows what the OOD panels hide: how unsure each method is on clean digits
        entropies[name] = {"mnist_test": prediction.score("entropy").numpy()}
        entropies[name].update({k: p.score("entropy").numpy() for k, p in ood.items()})
        log(f"{name}: accuracy {results[name]['accuracy']:.4f}")
    rotation = rotating_digit({k: methods[k] for k in methods if k == "softmax" or k.startswith("edl_")},
                              data["test_raw"], test_y)
    figures.entropy_cdf(entropies, out / "entropy_cdf.png")
    figures.rotating_digit(rotation, out / "rotating_digit.png")
    payload = {
        "config": asdict(config),
        "torch_threads": torch.get_num_threads(),
        "wall_seconds": time.perf_counter() - start,
        "training": logs,
        "results": results,
        "rotation": {k: v for k, v in rotation.items() if k != "images"},
    }
    _write_json(out / "results.json", payload)
    table = figures.markdown_tables(results, config.ood_sets)
    atomic_write_text(out / "table.md", table)
    return payload
