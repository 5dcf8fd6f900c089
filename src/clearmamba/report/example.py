"""Synthetic predictions with the shape of a real CLEAR-Mamba run, to show what a report looks like.

Two models see the same simulated class signal ``z = m * onehot(y) + noise`` where ``m`` is how clear
the exam is. The softmax model sharpens it (``logits = 3 z``), so it is sure even when wrong; the
evidential model collects evidence in proportion to ``m``, so unclear and unfamiliar exams get little
evidence. Both have the same accuracy (same argmax). Nothing here is a measurement.

``python -m clearmamba.report.example out.html`` writes a sample report.
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor

from clearmamba.uncertainty import Prediction

CLASS_NAMES = ["normal", "leakage", "staining", "pooling"]
FRAME_TIMES = (10.0, 20.0, 35.0, 60.0, 150.0, 300.0)  # seconds after injection, one per simulated frame


def _exam_frames(label: int, m: float, generator: torch.Generator, t: int = len(FRAME_TIMES), size: int = 40) -> Tensor:
    """A fake angiography exam ``[t, 1, h, w]``: a vessel-like stripe plus a lesion that evolves with time."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    vessel = torch.exp(-((yy - 0.4 * torch.sin(3 * xx)) ** 2) / 0.01)
    cy, cx = (torch.rand(2, generator=generator) - 0.5).tolist()
    frames = []
    for i in range(t):
        grow = (i + 1) / t
        radius = {0: 0.05, 1: 0.1 + 0.3 * grow, 2: 0.2, 3: 0.25 * grow}[label % 4]
        lesion = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2)) * min(m, 3) / 3
        noise = 0.15 * torch.randn(size, size, generator=generator)
        frames.append((0.6 * vessel * grow + lesion + noise)[None])
    return torch.stack(frames)


def synthetic_predictions(
    n: int = 300, seed: int = 0, with_gallery: bool = True
) -> tuple[dict[str, dict[str, Prediction]], list[str], dict[str, tuple[Tensor, tuple[float, ...]]]]:
    """``(predictions, class_names, gallery)`` for two models on test, shifted and two OOD sets; the gallery maps
    exam id -> (frames, frame times in seconds)."""
    g = torch.Generator().manual_seed(seed)
    k = len(CLASS_NAMES)
    predictions: dict[str, dict[str, Prediction]] = {"CLEAR-Mamba (evidential)": {}, "MedMamba (softmax)": {}}
    gallery: dict[str, tuple[Tensor, tuple[float, ...]]] = {}
    sets = {"test": (0.5, 6.0, 1.0), "held-out device": (0.0, 4.0, 1.2), "ood_noise": None, "ood_fundus": None}
    for name, spec in sets.items():
        labels = torch.randint(0, k, (n,), generator=g)
        if spec is None:  # no class signal at all
            m = torch.zeros(n)
            z = torch.randn(n, k, generator=g) * (1.0 if name == "ood_noise" else 1.8)
        else:
            low, high, noise = spec
            m = low + (high - low) * torch.rand(n, generator=g)
            z = m[:, None] * torch.nn.functional.one_hot(labels, k) + noise * torch.randn(n, k, generator=g)
        ids = [f"{name.replace(' ', '-')}-{i:04d}" for i in range(n)]
        labelled = {} if spec is None else {"labels": labels}
        evidence = torch.nn.functional.softplus(3 * z) * (0.5 + 8 * m[:, None])
        predictions["CLEAR-Mamba (evidential)"][name] = Prediction.from_evidence(evidence, ids=ids, **labelled)
        predictions["MedMamba (softmax)"][name] = Prediction.from_logits(3 * z, ids=ids, **labelled)
        if with_gallery:
            for i in range(n):
                gallery[ids[i]] = (_exam_frames(int(labels[i]), float(m[i]), g), FRAME_TIMES)
    return predictions, CLASS_NAMES, gallery


def synthetic_rules(seed: int = 1, n: int = 1000) -> dict:
    """Each model's referral rule, fitted on a synthetic validation draw of the same models."""
    from clearmamba.evaluation import fit_referral_rule

    validation, class_names, _ = synthetic_predictions(n, seed=seed, with_gallery=False)
    return {m: fit_referral_rule(sets["test"], class_names=class_names) for m, sets in validation.items()}


def main(argv: list[str] | None = None) -> None:
    from clearmamba.report import Provenance, write_report

    argv = sys.argv[1:] if argv is None else argv
    out = argv[0] if argv else "sample_report.html"
    predictions, class_names, gallery = synthetic_predictions()
    provenance = Provenance(seed=0, split="synthetic: 1000 validation exams (seed 1), 300 per evaluation set (seed 0)",
                            data="synthetic, clearmamba.report.example (not a measurement)",
                            command="python -m clearmamba.report.example " + " ".join(argv),
                            torch_version=torch.__version__)  # fmt: skip
    path = write_report(out, predictions, class_names=class_names, gallery=gallery, rules=synthetic_rules(),
                        provenance=provenance, title="Sample trust report (synthetic data)")  # fmt: skip
    print(path)


if __name__ == "__main__":
    main()
