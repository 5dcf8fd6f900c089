"""``make bench``: every benchmark, side by side, then docs/benchmarks.md regenerated from the JSON.

Default (about 5 minutes on 2 shared cores): model throughput, cost of uncertainty, the stages of
``clearmamba demo --quick`` (3 runs) and of the default demo (1 run, ~2-3 min), and the scan benchmark
in quick mode (fused vs compiled vs eager on a demo and a MedMamba-T shape at 1 thread); ``--full``
adds the full scan benchmarks (``benchmarks.scan``, ``benchmarks.scan_fused``: tens of minutes,
torch.compile per shape). Sections whose benchmark did not run are rendered from their saved JSON.

    python -m benchmarks.run_all [--full] [--repeats 9] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import demo_stages, model, scan, scan_fused, uncertainty_cost
from benchmarks.common import ROOT, describe, machine, read_json

DOC = ROOT / "docs" / "benchmarks.md"
SCAN_NOTES = Path(__file__).with_name("scan_notes.md")
# the existing 1-thread scan_fused run: a demo shape and a MedMamba-T shape, fused vs compiled vs eager
QUICK_SCAN = ["--quick", "--threads", "1", "--only", "T@224 stage 3,demo tiny@64 stage 1", "--impls",
              "fused,compiled,eager"]  # fmt: skip


def goals_summary(uncertainty: dict | None) -> str:
    if not uncertainty:
        return ""
    lines = ["Goals of issue 9 measured by this run (details and profiles in the sections below):", ""]
    names = {"rap": "RaP/EDL <= 1.05x a softmax forward", "mc_head": "MC Dropout T=32 head-only <= 1.5x",
             "ensemble_vectorised_vs_loop": "ensemble M=5 vectorised <= 0.8x the loop"}  # fmt: skip
    for key, goal in uncertainty["goals"].items():
        state = "met" if goal["met"] else "not met"
        lines.append(f"- {names[key]}: {goal['ratio']:.2f}x, {state}.")
    return "\n".join(lines) + "\n"


def scan_sections() -> list[str]:
    """The scan benchmarks' sections, rendered from their saved JSON by their own renderers."""
    sections = [SCAN_NOTES.read_text().rstrip("\n") + "\n"] if SCAN_NOTES.exists() else []
    saved = read_json("scan")
    if saved:
        sections.append(f"{scan.BEGIN}\n{scan.markdown_table(saved)}{scan.END}\n")
    for threads in (None, 1):
        path, heading = scan_fused.outputs_for(threads)
        if path.exists():
            report = json.loads(path.read_text())
            sections.append(scan_fused.markdown({"heading": heading, "load_average_end": None, **report}))
    return sections


def previous_header() -> str | None:
    """The "Produced by" paragraph of the current doc: a re-render keeps the machine of the run it describes."""
    if not DOC.exists():
        return None
    return next((line + "\n" for line in DOC.read_text().splitlines() if line.startswith("Produced by")), None)


def render(command: str, host: dict, seconds: float | None, header: str | None = None) -> str:
    parts = [
        "# Benchmarks\n",
        header
        or f"Produced by `{command}` (`make bench`){f' in {seconds / 60:.1f} min' if seconds else ''}. Machine: "
        f"{describe(host)}. The machine is shared with other jobs, so ratios between alternatives timed side "
        "by side in one process are the results; absolute times are context. Benchmarks run at 1 intra-op "
        "thread by default: on a loaded 2-core machine every extra OpenMP barrier waits for a descheduled "
        "thread (see the scan notes below).\n",
        goals_summary(read_json("uncertainty_cost")),
    ]
    renderers = [("model", model.markdown), ("uncertainty_cost", uncertainty_cost.markdown),
                 ("demo_stages", demo_stages.markdown), ("demo_stages_full", demo_stages.markdown)]  # fmt: skip
    for name, fn in renderers:
        report = read_json(name)
        if report:
            parts.append(fn(report))
    parts += scan_sections()
    return "\n".join(p for p in parts if p)


def run_module(module: str, args: list[str]) -> None:
    """A scan benchmark in its own process (it sets its own threads and writes its own JSON)."""
    subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, check=True)


def write_doc(text: str) -> None:
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(DOC)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also the full scan benchmarks (tens of minutes)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--render-only", action="store_true", help="rewrite docs/benchmarks.md from saved JSON")
    args = parser.parse_args(argv)
    command = "python -m benchmarks.run_all" + (" --full" if args.full else "")
    torch.set_num_threads(args.threads)
    host = machine()
    if args.render_only:
        write_doc(render(command, host, None, header=previous_header()))
        return
    start = time.perf_counter()
    steps = [
        ("model throughput", lambda: model.run(args.repeats, args.threads)),
        ("cost of uncertainty", lambda: uncertainty_cost.run(args.repeats, args.threads)),
        ("demo stages (--quick)", lambda: demo_stages.run(args.threads)),
    ]
    if not args.full:  # quick scan: fused vs compiled vs eager on two shapes at 1 thread (~4 min of compiles)
        steps.append(("benchmarks.scan_fused " + " ".join(QUICK_SCAN), lambda: run_module("benchmarks.scan_fused",
                                                                                         QUICK_SCAN)))  # fmt: skip
    steps.append(("demo stages (default demo, as make demo)", lambda: demo_stages.run(args.threads, full=True, runs=1)))
    if args.full:
        for module, extra in (("benchmarks.scan", []), ("benchmarks.scan_fused", []),
                              ("benchmarks.scan_fused", QUICK_SCAN)):  # fmt: skip
            steps.append((f"{module} {' '.join(extra)}", lambda m=module, e=extra: run_module(m, e)))
    for label, step in steps:
        t0 = time.perf_counter()
        print(f"[bench] {label} ...", flush=True)
        step()
        torch.set_num_threads(args.threads)  # a step may have changed it
        print(f"[bench] {label}: {time.perf_counter() - t0:.0f} s", flush=True)
    write_doc(render(command, host, time.perf_counter() - start))
    print(f"[bench] wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
