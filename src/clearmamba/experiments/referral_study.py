"""Does a checkpoint's referral promise hold on the built-in data? Issue 18's re-draw experiment.

For each checkpoint trained on ``builtin`` (e.g. the demo's), the same simulator (its recorded seed and sizes, so
the training exams are the same) draws fresh, larger evaluation sets: a calibration pool, a test set and
``n_ood`` exams per OOD set. :func:`clearmamba.evaluation.referral_redraws` then pools calibration and test,
draws a calibration set of ``n_calibration`` exams ``n_draws`` times, fits the rule on it and applies it to the
held-out exams and every OOD set; the held-out-camera set is reported beside them (it is labelled, but under
shift the exchangeability the guarantee rests on does not hold, see docs/referral.md).

    clearmamba experiment referral --checkpoint runs/demo/clear_mamba --checkpoint runs/demo/softmax
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from clearmamba.atomic import atomic_write_text
from clearmamba.data.sources import load_builtin
from clearmamba.errors import UserError
from clearmamba.evaluation import decide, referral_redraws
from clearmamba.training import load_run, predict


@dataclass(frozen=True)
class ReferralStudyConfig:
    checkpoints: tuple[str, ...]
    n_calibration: int = 1000  # exams per calibration draw (the demo's calibration size)
    n_test: int = 1000  # more held-out exams: the accepted error is a proportion of the accepted ones
    n_ood: int = 300  # per OOD set (issue 18: at least 300)
    n_draws: int = 20
    target_risk: float = 0.05
    delta: float = 0.1
    seed: int = 0

    @classmethod
    def quick_config(cls, **overrides) -> ReferralStudyConfig:
        return replace(cls(**{"checkpoints": (), **overrides}), n_calibration=60, n_test=60, n_ood=20, n_draws=3)


def run(config: ReferralStudyConfig, out_dir: str | Path, log: Callable[[str], None] = print) -> dict:
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, tables = {}, []
    for path in config.checkpoints:
        model, record = load_run(path)
        if record.data.builtin is None:
            raise UserError(f"--checkpoint {path}: trained on {record.data.source!r}; the study draws fresh exams "
                            "from the built-in simulator, so it needs a run trained with --data builtin")
        spec = replace(record.data.builtin, n_test=config.n_test, n_ood=config.n_ood, n_heldout=config.n_ood,
                       n_calibration=config.n_calibration)  # fmt: skip
        log(f"{path}: simulating {config.n_calibration} calibration, {config.n_test} test and {config.n_ood} exams "
            "per OOD / held-out-camera set ...")
        sets = load_builtin(spec)
        batch = record.train.eval_batch_size
        calibration, test = predict(model, sets["calibration"], batch), predict(model, sets["test"], batch)
        ood = {name: predict(model, sets[name], batch) for name in sets if name.startswith("ood")}
        result = referral_redraws(calibration, test, ood, n_draws=config.n_draws, calibration_size=config.n_calibration,
                                  seed=config.seed, compare_empirical=True, target_risk=config.target_risk,
                                  delta=config.delta)  # fmt: skip
        shifted = {}
        if "test_heldout_device" in sets:
            heldout = predict(model, sets["test_heldout_device"], batch)
            decisions = decide(heldout, record.referral)
            wrong = heldout.predicted != heldout.labels
            accepted = decisions.accepted
            shifted = {"n": len(heldout), "coverage": float(accepted.float().mean()),
                       "accepted_error": float(wrong[accepted].float().mean()) if bool(accepted.any()) else None,
                       "rule": "the checkpoint's own rule"}  # fmt: skip
        name = Path(path).name
        results[name] = {"checkpoint": str(path), "summary": result.summary(),
                         "draws": [asdict(d) for d in result.draws], "heldout_camera": shifted}  # fmt: skip
        tables.append(f"### {name}\n\n{result.table()}\n")
        log(f"{name}: held in {100 * result.held:.0f} % of {config.n_draws} draws")
    payload = {"config": asdict(config), "torch_threads": torch.get_num_threads(),
               "wall_seconds": time.perf_counter() - started, "results": results}  # fmt: skip
    atomic_write_text(out / "results.json", json.dumps(payload, indent=1, default=float), 0o644)
    atomic_write_text(out / "table.md", "\n".join(tables), 0o644)
    return payload
