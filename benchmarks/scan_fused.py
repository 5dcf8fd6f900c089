"""Benchmark: the fused C++ selective scan against compiled, eager and reference, in one process.

    python -m benchmarks.scan_fused            # full run (~5-10 min on 2 cores)
    python -m benchmarks.scan_fused --quick    # fewer repeats, reference only where it is cheap

Shapes are the scans MedMamba actually runs (recorded from the models): MedMamba-T at 224x224,
batch 8 (u [8, 4*d_inner, H*W], grouped B/C with g=4 directions, d_state 16) and the demo backbone
medmamba_tiny at 64x64, batch 32 (d_state 8). Inputs follow SS2D: delta_softplus with the dt-bias
init, A = -(1..n), D = 1, no z. Each cell is the median of repeats with the spread (min-max);
ratios are the headline. Writes benchmarks/results/scan_fused.json and a section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import machine as common_machine
from clearmamba.models import scan_fused, selective_scan

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "scan_fused.json"
DOC = ROOT / "docs" / "benchmarks.md"
HEADING = "## Fused CPU selective scan"
IMPLS = ("fused", "compiled", "eager", "reference")

# (name, batch, channels = 4 directions * d_inner, length = H*W, d_state)
SHAPES = [
    ("T@224 stage 1", 8, 384, 3136, 16),
    ("T@224 stage 2", 8, 768, 784, 16),
    ("T@224 stage 3", 8, 1536, 196, 16),
    ("T@224 stage 4", 8, 3072, 49, 16),
    ("demo tiny@64 stage 1", 32, 96, 256, 8),
    ("demo tiny@64 stage 2", 32, 192, 64, 8),
    ("demo tiny@64 stage 3", 32, 384, 16, 8),
    ("demo tiny@64 stage 4", 32, 768, 4, 8),
]


def scan_inputs(batch, channels, length, n, groups=4, seed=0):
    """SS2D-like inputs: raw delta around 0, dt bias from the MedMamba init, A = -(1..n), D = 1."""
    gen = torch.Generator().manual_seed(seed)
    dt = torch.exp(torch.rand(channels, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return {
        "u": torch.randn(batch, channels, length, generator=gen),
        "delta": 0.1 * torch.randn(batch, channels, length, generator=gen),
        "A": -torch.arange(1, n + 1, dtype=torch.float32).repeat(channels, 1),
        "B": torch.randn(batch, groups, n, length, generator=gen),
        "C": torch.randn(batch, groups, n, length, generator=gen),
        "D": torch.ones(channels),
        "delta_bias": dt + torch.log(-torch.expm1(-dt)),  # inverse softplus
    }


def run_once(impl, inputs, backward):
    if not backward:
        with torch.no_grad():
            selective_scan(**inputs, delta_softplus=True, impl=impl)
        return
    leaves = {k: v.detach().requires_grad_() for k, v in inputs.items()}
    out = selective_scan(**leaves, delta_softplus=True, impl=impl)
    out.backward(torch.ones_like(out))


def measure(impl, inputs, backward, repeats, warm_up=True):
    first = None
    if warm_up:  # first call: compile for `compiled`, warm-up for the rest
        start = time.perf_counter()
        run_once(impl, inputs, backward)
        first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_once(impl, inputs, backward)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": repeats, "first_call_s": first}


def reference_plan(name, backward, quick):
    """Timed calls of the slow reference loop (0 = skipped; no warm-up): seconds to minutes each."""
    if not name.startswith("T"):
        return 1 if quick else 3
    if backward and ("stage 1" in name or (quick and "stage 2" in name)):
        return 0 if quick else 1
    return 1


def machine():
    # the common description plus the SIMD level the fused kernel is built for; the machine is shared, and
    # other jobs' load inflates OpenMP-heavy paths (compiled, eager) most
    return {**common_machine(), "simd": torch.backends.cpu.get_cpu_capability()}


def outputs_for(threads):
    """JSON path and doc heading: the default run, or a separate one per explicit thread count."""
    if not threads:
        return RESULTS, HEADING
    return RESULTS.with_name(f"scan_fused_{threads}thread.json"), f"{HEADING} ({threads} thread)"


def fmt_time(cell):
    if cell is None:
        return "not run"
    return f"{cell['median_s'] * 1e3:.1f} ({cell['min_s'] * 1e3:.0f}-{cell['max_s'] * 1e3:.0f})"


def ratio(results, name, mode, num, den):
    a, b = results[name][mode].get(num), results[name][mode].get(den)
    return None if a is None or b is None else a["median_s"] / b["median_s"]


def fmt_ratio(value):
    return "-" if value is None else f"{value:.1f}x"


def markdown(report):
    res, lines = report["results"], []
    m = report["machine"]
    lines += [
        report["heading"],
        "",
        f"Command: `{report['command']}`. Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, "
        f"{m['torch_threads']} torch threads, torch {m['torch']} ({m['simd']}), Python {m['python']}; "
        f"1-min load average {m['load_average_1min']:.1f} at the start and "
        f"{report['load_average_end'] or float('nan'):.1f} at the end "
        "(the machine is shared with other jobs). "
        f"One-time build of the kernel: {report['build_s']:.1f} s in this run "
        "(0 when it was already cached).",
        "",
        "Headline: speed-up of `fused` (median time of the other implementation / median time of fused; "
        "higher is better).",
        "",
        "| shape (b, d, l, n) | fwd vs compiled | fwd vs eager | fwd vs reference "
        "| fwd+bwd vs compiled | fwd+bwd vs eager | fwd+bwd vs reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, shape in ((s[0], s[1:]) for s in SHAPES if s[0] in res):
        cells = [fmt_ratio(ratio(res, name, mode, other, "fused"))
                 for mode in ("forward", "forward_backward") for other in ("compiled", "eager", "reference")]
        lines.append(f"| {name} {tuple(shape)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Times in ms, median (min-max) of the repeats; `compiled` first call = its compile time for that "
        "shape (fused pays no per-shape cost).",
        "",
        "| shape | mode | fused | compiled | eager | reference | compiled first call (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in (s[0] for s in SHAPES if s[0] in res):
        for mode in ("forward", "forward_backward"):
            row = res[name][mode]
            comp = row.get("compiled")
            first = f"{comp['first_call_s']:.1f}" if comp else "-"
            cells = " | ".join(fmt_time(row.get(i)) for i in IMPLS)
            lines.append(f"| {name} | {mode.replace('_', '+')} | {cells} | {first} |")
    lines += ["", *goals(res), "", *report["notes"], ""]
    return "\n".join(lines)


def goals(res):
    """Issue 9's goals, checked cell by cell: fwd+bwd no slower than compiled, >= 100x reference."""
    slower, below = [], []
    for name in (s[0] for s in SHAPES if s[0] in res):
        vs_compiled = ratio(res, name, "forward_backward", "compiled", "fused")
        if vs_compiled is not None and vs_compiled < 1:
            slower.append(f"{name} ({vs_compiled:.2f}x)")
        for mode in ("forward", "forward_backward"):
            vs_ref = ratio(res, name, mode, "reference", "fused")
            if vs_ref is not None and vs_ref < 100:
                below.append(f"{name} {mode.replace('_', '+')} ({vs_ref:.0f}x)")
    return [
        "Goals (issue 9):",
        "- fwd+bwd at least as fast as `compiled` on every shape: "
        + ("met on every measured shape." if not slower else "NOT met on " + ", ".join(slower) + "."),
        "- >= 100x `reference`: " + ("met on every measured cell." if not below else
                                     "below 100x on " + ", ".join(below) + ". " + REFERENCE_GAP),
    ]


# Where the time goes when the 100x-reference goal is missed (torch.profiler and process CPU time,
# 1 thread, this machine): on short sequences the reference is itself cheap (its Python loop has only
# l steps), and fused time is the kernel plus a few elementwise passes and the autograd bookkeeping.
REFERENCE_GAP = (
    "Those cells are the short-sequence shapes (l <= 256), where the reference's Python loop has few steps "
    "and is itself fast, and forward-only cells. Profile of fused fwd+bwd at demo stage 3 (32, 384, 16, 8), "
    "1 thread: the C++ backward 48 % and forward 19 % of the time, the elementwise bias/softplus/sigmoid "
    "passes ~19 %, autograd bookkeeping ~13 %; process CPU time 5.6 ms fused vs 64 ms reference (11x), "
    "while at T stage 4 it is 31 ms vs 6.9 s (226x) and at demo stage 1 17 ms vs 2.1 s (124x). "
    "Wall-clock ratios on a loaded machine are noisier still (the tables above)."
)


def write_doc(section, heading):
    """Replace this benchmark's section of docs/benchmarks.md (others are left alone), atomically."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    start = text.find(heading + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = DOC.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(DOC)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats; skip the slowest reference runs")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", default=None,
                        help="comma-separated texts; run only shapes whose name contains one of them")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated subset of {IMPLS}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads; a 1-thread run (own JSON and doc section) is insensitive to "
                        "OpenMP barrier stalls on a shared machine")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the docs section from the saved JSON without measuring")
    args = parser.parse_args(argv)
    if args.render_only:
        results_path, heading = outputs_for(args.threads)
        report = {"heading": heading, "load_average_end": None, **json.loads(results_path.read_text())}
        write_doc(markdown(report), heading)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)

    start = time.perf_counter()
    if not scan_fused.is_available():
        sys.exit(f"fused scan unavailable: {scan_fused.unavailable_reason()}")
    build_s = time.perf_counter() - start

    host = machine()
    results = {}
    filters = args.only.split(",") if args.only else [""]
    shapes = [s for s in SHAPES if any(f.strip() in s[0] for f in filters)]
    impls = [i for i in IMPLS if i in args.impls.split(",")]
    report = write_outputs(args, repeats, build_s, results, host)
    for name, b, d, length, n in shapes:
        inputs = scan_inputs(b, d, length, n)
        results[name] = {"shape": {"b": b, "d": d, "l": length, "n": n, "groups": 4}}
        for mode, backward in (("forward", False), ("forward_backward", True)):
            row = {}
            for impl in impls:
                reps = reference_plan(name, backward, args.quick) if impl == "reference" else repeats
                if reps == 0:
                    continue
                row[impl] = measure(impl, inputs, backward, reps, warm_up=impl != "reference")
                print(f"{name:24s} {mode:16s} {impl:9s} {fmt_time(row[impl])} ms", flush=True)
            results[name][mode] = row
        # after every shape, so a run cut short still leaves a report
        report = write_outputs(args, repeats, build_s, results, host)
    print(markdown(report))


def write_outputs(args, repeats, build_s, results, host):
    notes = [
        "Notes:",
        f"- `fused`, `compiled`, `eager`: {repeats} timed repeats after one untimed first call. "
        "`reference` (the readable Python loop) is 100-1000x slower, so it gets no warm-up and "
        + ("1 timed call per cell; its forward+backward at T stages 1-2 (minutes each, GBs of autograd "
           "graph) is skipped (`-`)." if args.quick else
           "1 timed call on the MedMamba-T shapes and 3 on the demo shapes."),
        "- Shapes were recorded from `create_model(...)` forwards; MedMamba's SS2D scans "
        "4 directions x d_inner channels with grouped B/C (g=4), e.g. stage 1 of T is d = 4 x 96 = 384.",
        "- `compiled` is `torch.compile` of an 8-step chunk (opt-in); its first call per shape includes the "
        "compile. `fused` needs one build per machine (cached), then nothing per shape.",
        "- Load sensitivity: `fused` enters one OpenMP parallel region per call; `compiled` enters one per "
        "8-step chunk and `eager` one per op, so when other jobs share the cores (see the load average) each "
        "of their barriers waits for a descheduled thread. On a busy machine this inflates "
        "`compiled`/`eager` times far more than `fused` times; on an idle one the gap is smaller "
        "(MEDMAMBA.md measured `compiled` at 1.12 s fwd+bwd for T stage 1 on this machine when quiet).",
    ]
    results_path, heading = outputs_for(args.threads)
    flags = "".join(
        f" {flag}" for flag, on in (
            ("--quick", args.quick), (f"--threads {args.threads}", args.threads),
            (f"--repeats {args.repeats}", args.repeats), (f'--only "{args.only}"', args.only),
            (f"--impls {args.impls}", args.impls != ",".join(IMPLS)),
        ) if on
    )
    report = {
        "heading": heading,
        "command": "python -m benchmarks.scan_fused" + flags,
        "machine": host,
        "build_s": build_s,
        "results": results,
        "notes": notes,
        "fused_chunk": 32,
        "load_average_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    results_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = results_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(results_path)
    write_doc(markdown(report), heading)
    return report


if __name__ == "__main__":
    main()
