"""Wall time of each stage of ``clearmamba demo --quick``, so regressions show.

The stages are timed by wrapping the functions ``training/demo.py`` calls (no edits to the demo):
``load_builtin`` (data), ``train_twins`` (the three models' training, validation, post-hoc fit and referral rule,
side by side in worker processes for the full demo), ``predict`` on the evaluation sets (evaluation, per model)
and ``write_evaluation`` (metrics + report).
Shares of the total are the headline; absolute seconds move with the machine's load.

    python -m benchmarks.demo_stages [--threads 1] [--full]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict

import torch

from benchmarks.common import describe, machine, write_json


def run(threads: int = 1, full: bool = False, runs: int = 3) -> dict:
    """Median over ``runs`` demo runs of each stage's seconds."""
    torch.set_num_threads(threads)
    host = machine()
    measured = [run_once(full) for _ in range(runs)]
    totals = [m[0] for m in measured]
    stages = {k: statistics.median(m[1][k] for m in measured) for k in measured[0][1]}
    report = {
        "command": f"python -m benchmarks.demo_stages --threads {threads} --runs {runs}" + (" --full" if full else ""),
        "demo": "clearmamba demo" + ("" if full else " --quick"),
        "machine": host,
        "runs": runs,
        "total_s": statistics.median(totals),
        "total_min_s": min(totals),
        "total_max_s": max(totals),
        "stages_s": stages,
    }
    write_json("demo_stages" + ("_full" if full else ""), report)
    return report


def run_once(full: bool) -> tuple[float, dict[str, float]]:
    from clearmamba.training import demo

    stages: dict[str, float] = defaultdict(float)
    current = {"model": None}

    def timed(stage_of, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                stages[stage_of(*args, **kwargs)] += time.perf_counter() - start

        return wrapper

    def loading_stage(folder, *args, **kwargs):
        current["model"] = folder.name  # the demo loads each twin from <out>/<model name>, then predicts with it
        return "load checkpoints"

    patches = {
        "load_builtin": timed(lambda *a, **k: "data", demo.load_builtin),
        "train_twins": timed(lambda *a, **k: "train (the three twins)", demo.train_twins),
        "held_out_cameras": timed(lambda *a, **k: "held-out cameras (11 cameras, plain and +bn)",
                                  demo.held_out_cameras),
        "load_run": timed(loading_stage, demo.load_run),
        "predict": timed(lambda *a, **k: f"evaluate {current['model']}", demo.predict),
        "write_evaluation": timed(lambda *a, **k: "report", demo.write_evaluation),
    }
    originals = {name: getattr(demo, name) for name in patches}
    start = time.perf_counter()
    try:
        for name, fn in patches.items():
            setattr(demo, name, fn)
        with tempfile.TemporaryDirectory() as out:
            demo.run_demo(out, quick=not full, progress=False, log=lambda *a, **k: None)
    finally:
        for name, fn in originals.items():
            setattr(demo, name, fn)
    total = time.perf_counter() - start
    stages["other (claims, metrics.json)"] = max(0.0, total - sum(stages.values()))
    return total, dict(stages)


def markdown(report: dict) -> str:
    total = report["total_s"]
    lines = [
        f"## Demo stages (`{report['demo']}`)",
        "",
        f"Command: `{report['command']}`. Machine: {describe(report['machine'])}. Stages timed by wrapping the "
        "functions `training/demo.py` calls (data = `load_builtin`; train = `train_twins`, which includes the "
        "validation passes, RaP's post-hoc fit and the referral rule; evaluate = `predict` on the test, held-out "
        "and OOD sets; report = "
        f"`write_evaluation`). Median of {report.get('runs', 1)} runs per stage; the first model's training also "
        "pays one-time costs (loading the fused scan kernel, first-call allocations).",
        "",
        "Headline: share of the demo's wall time per stage.",
        "",
        "| stage | share | seconds |",
        "|---|---|---|",
    ]
    for stage, seconds in report["stages_s"].items():
        lines.append(f"| {stage} | {100 * seconds / total:.1f} % | {seconds:.1f} |")
    span = f" ({report['total_min_s']:.1f}-{report['total_max_s']:.1f})" if "total_min_s" in report else ""
    lines.append(f"| total, median (min-max) | 100 % | {total:.1f}{span} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--full", action="store_true", help="time the default (non-quick) demo")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    print(markdown(run(args.threads, args.full, args.runs)))


if __name__ == "__main__":
    main()
