"""Selective-scan speed: every implementation side by side in one process.

    python -m benchmarks.scan [--quick] [--no-compiled]

Times forward (no grad) and forward+backward on MedMamba-T stage shapes at 224x224 and on the
nano/tiny demo shapes (64x64 inputs, 128 images), median of repeats. The reference loop is slow,
so it runs once per case, and its forward+backward is timed at shorter sequence lengths (stated in
each case's name and note). Peak memory is the resident-set growth sampled every 2 ms during the
call. Writes benchmarks/results/scan.json and the scan table in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from clearmamba.models import selective_scan

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "scan.json"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- scan:begin -->", "<!-- scan:end -->"


@dataclass
class Case:
    name: str
    b: int
    groups: int  # K = 4 directions in SS2D
    per_group: int  # d_inner
    l: int
    n: int
    backward: bool
    note: str = ""
    compiled: bool = False  # compiling takes 15-80 s per shape here, so only some cases run it


CASES = [
    Case("T@224 stage1 b8", 8, 4, 96, 3136, 16, False, "KD=384, L=56*56"),
    Case("T@224 stage1 b8", 8, 4, 96, 3136, 16, True, "reference skipped (minutes); memory goal case"),
    Case("T@224 stage1 b8 L=392", 8, 4, 96, 392, 16, True, "stage-1 width, L cut 8x so the reference fits"),
    Case("T@224 stage3 b8", 8, 4, 384, 196, 16, False, "KD=1536, L=14*14", compiled=True),
    Case("T@224 stage3 b2", 2, 4, 384, 196, 16, True, "batch cut to 2 for the reference", compiled=True),
    Case("T@224 stage4 b32", 32, 4, 768, 49, 16, False, "KD=3072, L=7*7"),
    Case("nano@64 stage1 b128", 128, 4, 16, 256, 8, False, "demo: 16 exams x 8 frames at 64x64"),
    Case("nano@64 stage1 b128", 128, 4, 16, 256, 8, True, "", compiled=True),
    Case("tiny@64 stage1 b128", 128, 4, 24, 256, 8, True, ""),
]
REFERENCE_SKIP = {("T@224 stage1 b8", True)}


def make_inputs(c: Case, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    d = c.groups * c.per_group
    return dict(
        u=torch.randn(c.b, d, c.l, generator=g),
        delta=torch.randn(c.b, d, c.l, generator=g) * 0.5 - 3.0,
        A=-torch.arange(1.0, c.n + 1).expand(d, c.n).contiguous(),
        B=torch.randn(c.b, c.groups, c.n, c.l, generator=g),
        C=torch.randn(c.b, c.groups, c.n, c.l, generator=g),
        D=torch.ones(d),
        delta_bias=torch.randn(d, generator=g) * 0.5,
    )


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Largest resident-set growth over the block, sampled by a thread."""

    def __enter__(self):
        self.base = self.peak = rss_bytes()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_bytes())
        self.growth = self.peak - self.base


def run_once(impl: str, x: dict, backward: bool):
    if not backward:
        with torch.no_grad():
            return selective_scan(**x, delta_softplus=True, impl=impl), None
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    y = selective_scan(**leaves, delta_softplus=True, impl=impl)
    grads = torch.autograd.grad(y, list(leaves.values()), torch.ones_like(y))
    return y.detach(), grads


def bench(impl: str, x: dict, backward: bool, repeats: int):
    times, out = [], None
    with PeakRSS() as mem:
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = run_once(impl, x, backward)
            times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.growth, out


def max_rel_error(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one repeat each (a smoke run)")
    ap.add_argument("--no-compiled", action="store_true", help="skip the torch.compile implementation")
    ap.add_argument("--threads-check", action="store_true", help="only re-time eager at 2 vs 1 intra-op "
                    "threads on a few cases and add that table to the existing results")
    ap.add_argument("--only", default="", help="run cases whose 'name pass' contains this text and update "
                    "just those rows of an existing results file")
    args = ap.parse_args(argv)
    if args.threads_check:
        report = json.loads(RESULTS.read_text())
        report["thread_check"] = thread_check(repeats=1 if args.quick else 3)
        write_results(report)
        return report
    impls = ["reference", "eager"] + ([] if args.no_compiled else ["compiled"])
    repeats = 1 if args.quick else 3
    load_before = os.getloadavg()
    rows = []
    for case in CASES:
        if args.only and args.only not in f"{case.name} {'fwd+bwd' if case.backward else 'fwd'}":
            continue
        x = make_inputs(case)
        results, outputs = {}, {}
        for impl in impls:
            if impl == "reference" and (case.name, case.backward) in REFERENCE_SKIP:
                continue
            if impl == "compiled" and not case.compiled:
                continue
            extra = {}
            if impl == "compiled":  # first call compiles this shape; time it separately
                t0 = time.perf_counter()
                run_once(impl, x, case.backward)
                extra["compile_s"] = round(time.perf_counter() - t0, 2)
            reps = 1 if impl == "reference" else repeats
            seconds, growth, out = bench(impl, x, case.backward, reps)
            outputs[impl] = out
            mb = round(growth / 2**20)
            results[impl] = dict(seconds=round(seconds, 4), repeats=reps, peak_rss_growth_mb=mb, **extra)
            kind = "fwd+bwd" if case.backward else "fwd"
            print(f"{case.name:26s} {kind:7s} {impl:9s} {seconds:8.3f} s  +{mb:6d} MB {extra}", flush=True)
        if "reference" in outputs:
            ref_y, ref_g = outputs["reference"]
            for impl, (y, g) in outputs.items():
                if impl == "reference":
                    continue
                err = max_rel_error(y, ref_y)
                if g is not None:
                    err = max([err] + [max_rel_error(a, b) for a, b in zip(g, ref_g)])
                results[impl]["max_rel_error_vs_reference"] = float(f"{err:.2e}")
                ratio = results["reference"]["seconds"] / results[impl]["seconds"]
                results[impl]["speedup_vs_reference"] = round(ratio, 1)
        rows.append(
            dict(
                case=case.name,
                pass_="fwd+bwd" if case.backward else "fwd",
                b=case.b,
                kd=case.groups * case.per_group,
                l=case.l,
                n=case.n,
                note=case.note,
                results=results,
            )
        )
    if args.only and RESULTS.exists():  # replace just the re-run rows of the last full run
        fresh = {(r["case"], r["pass_"]): r for r in rows}
        saved = json.loads(RESULTS.read_text())["cases"]
        old = [{("pass_" if k == "pass" else k): v for k, v in r.items()} for r in saved]
        rows = [fresh.get((r["case"], r["pass_"]), r) for r in old]
        for r in rows:
            if (r["case"], r["pass_"]) in fresh:
                rerun = f"re-run at load {os.getloadavg()[0]:.1f}"
                r["note"] = f"{r['note']}; {rerun}" if r["note"] else rerun
    report = dict(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        machine=f"{platform.machine()}, {os.cpu_count()} cpus",
        load_average_before=[round(v, 1) for v in load_before],
        load_average_after=[round(v, 1) for v in os.getloadavg()],
        repeats=repeats,
        cases=[{("pass" if k == "pass_" else k): v for k, v in r.items()} for r in rows],
    )
    if RESULTS.exists() and "thread_check" in (previous := json.loads(RESULTS.read_text())):
        report["thread_check"] = previous["thread_check"]
    write_results(report)
    return report


THREAD_CASES = [c for c in CASES if (c.name, c.backward) in {
    ("T@224 stage3 b8", False), ("T@224 stage1 b8 L=392", True), ("nano@64 stage1 b128", True)}]


def thread_check(repeats: int) -> dict:
    """Eager at the default intra-op threads and at 1, back to back (the script may set threads)."""
    default = torch.get_num_threads()
    rows = []
    for case in THREAD_CASES:
        x = make_inputs(case)
        row = dict(case=case.name, pass_="fwd+bwd" if case.backward else "fwd")
        for threads in (default, 1):
            torch.set_num_threads(threads)
            run_once("eager", x, case.backward)  # warm-up
            row[f"seconds_{threads}_threads"] = round(bench("eager", x, case.backward, repeats)[0], 4)
        torch.set_num_threads(default)
        print(row, flush=True)
        rows.append({("pass" if k == "pass_" else k): v for k, v in row.items()})
    return dict(load_average=[round(v, 1) for v in os.getloadavg()], default_threads=default, cases=rows)


def write_results(report: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(RESULTS)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    section = f"{BEGIN}\n{markdown_table(report)}{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(DOC)


def markdown_table(report: dict) -> str:
    lines = [
        "## Selective scan (`python -m benchmarks.scan`)",
        "",
        f"torch {report['torch']}, {report['threads']} threads, {report['machine']}; 1-min load average "
        f"{report['load_average_before'][0]} before / {report['load_average_after'][0]} after (other jobs "
        f"shared the machine). Median of {report['repeats']} repeats (reference: 1 run). Speed-up and error "
        "are against `reference` in the same process; error is the largest relative error of the output "
        "and, for fwd+bwd, of every gradient. Memory is resident-set growth during the call.",
        "",
        "| case | pass | b x KD x L x N | impl | time (s) | vs ref | rel. error | +RSS (MB) | compile (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report["cases"]:
        shape = f"{c['b']} x {c['kd']} x {c['l']} x {c['n']}"
        for impl, r in c["results"].items():
            speed = f"{r['speedup_vs_reference']}x" if "speedup_vs_reference" in r else "-"
            err = f"{r['max_rel_error_vs_reference']:.1e}" if "max_rel_error_vs_reference" in r else "-"
            lines.append(
                f"| {c['case']} | {c['pass']} | {shape} | {impl} | {r['seconds']:.3f} | {speed} | {err} | "
                f"{r['peak_rss_growth_mb']} | {r.get('compile_s', '-')} |"
            )
    notes = [f"- {c['case']} ({c['pass']}): {c['note']}" for c in report["cases"] if c["note"]]
    if "thread_check" in report:
        tc = report["thread_check"]
        t = tc["default_threads"]
        notes += [
            "",
            f"Eager at {t} intra-op threads vs 1 (`--threads-check`, load average {tc['load_average'][0]}):",
            "",
            f"| case | pass | {t} threads (s) | 1 thread (s) |",
            "|---|---|---|---|",
        ] + [
            f"| {c['case']} | {c['pass']} | {c[f'seconds_{t}_threads']:.3f} | {c['seconds_1_threads']:.3f} |"
            for c in tc["cases"]
        ]
    return "\n".join(lines + [""] + notes) + "\n"


if __name__ == "__main__":
    main()
