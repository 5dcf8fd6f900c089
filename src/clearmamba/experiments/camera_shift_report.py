"""Markdown tables of the camera-shift study (``experiments.camera_shift``): the ablation, then per camera."""

from __future__ import annotations

import math
from typing import Any


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _interval(p: dict[str, Any]) -> str:
    if not p["n"]:
        return "n/a (none accepted)"
    return f"{_pct(p['value'])} [{_pct(p['low'])}-{_pct(p['high'])}]"


def ablation_table(payload: dict) -> str:
    seeds = payload["config"]["seeds"]
    head = ("| candidate | evaluation | in-distribution accuracy % | mean held-out-camera accuracy % | gap (points) | "
            "worst camera (accuracy %) | cameras with accepted error <= 10 % | train s |")  # fmt: skip
    lines = [head, "|" + "---|" * 8]
    for candidate, per_seed in payload["summary"].items():
        for evaluation in ("plain", "+bn"):
            rows = [per_seed[str(s)][evaluation] for s in seeds if str(s) in per_seed]
            test = [r["test_accuracy"] for r in rows]
            camera = [r["mean_camera_accuracy"] for r in rows]
            gap = [100 * (t - c) for t, c in zip(test, camera)]
            worst = min(rows, key=lambda r: r["worst_camera_accuracy"])
            train = [payload["results"][candidate][str(s)]["train_seconds"] for s in seeds if str(s) in per_seed]
            within = "/".join(f"{r['cameras_within_2x_target']}" for r in rows) + f" of {rows[0]['n_cameras']}"
            lines.append(f"| {candidate} | {evaluation} | {' / '.join(_pct(t) for t in test)} | "
                         f"{' / '.join(_pct(c) for c in camera)} | {' / '.join(f'{g:.1f}' for g in gap)} | "
                         f"{worst['worst_camera']} ({_pct(worst['worst_camera_accuracy'])}) | {within} | "
                         f"{' / '.join(f'{t:.0f}' for t in train)} |")  # fmt: skip
    return "\n".join(lines)


def camera_table(payload: dict, candidate: str, evaluation: str, seed: int) -> str:
    per_set = payload["results"][candidate][str(seed)][evaluation]
    lines = [f"`{candidate}`, {evaluation}, seed {seed}:", "",
             "| set | accuracy % [95 % CI] | ECE | coverage % | accepted error % [95 % CI] | shift AUROC |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for name, v in per_set.items():
        shift = f"{v['shift_auroc']:.3f}" if "shift_auroc" in v else "-"
        lines.append(f"| {name} | {_interval(v['accuracy'])} | {v['ece']:.3f} | {_pct(v['coverage']['value'])} | "
                     f"{_interval(v['accepted_error'])} | {shift} |")  # fmt: skip
    return "\n".join(lines)


def markdown(payload: dict) -> str:
    seeds = payload["config"]["seeds"]
    parts = ["Seeds are separated by `/` in each cell (" + ", ".join(str(s) for s in seeds) + ").", "",
             ablation_table(payload)]  # fmt: skip
    if payload.get("pruned"):
        parts += ["", "Pruned after the first seed: " + "; ".join(f"`{c}` ({why})" for c, why in
                                                               payload["pruned"].items()) + "."]  # fmt: skip
    for candidate in payload["results"]:
        for evaluation in ("plain", "+bn"):
            parts += ["", camera_table(payload, candidate, evaluation, seeds[0])]
    parts += ["", f"Wall time {payload['wall_seconds']:.0f} s at {payload['torch_threads']} torch thread(s) per "
              f"process, {payload['config']['workers']} training worker(s)."]  # fmt: skip
    return "\n".join(parts) + "\n"
