"""Shared helpers for the benchmark scripts: interleaved timing, the machine, atomic JSON, ratios.

Every benchmark times its alternatives side by side in one process, one repeat of each in turn
(round-robin), so a burst of load from other jobs hits all of them alike; medians are the headline and
ratios between alternatives the result, because absolute times move with the machine's load.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"


def machine() -> dict:
    """CPU model, cores, torch version and threads, and the 1-min load average now."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def describe(host: dict) -> str:
    return (
        f"{host['cpu']}, {host['logical_cpus']} logical CPUs, torch {host['torch']} at "
        f"{host['torch_threads']} intra-op thread(s), Python {host['python']}; "
        f"1-min load average {host['load_average_1min']} at the start"
    )


def summary(times: list[float]) -> dict:
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": len(times),
        "times_s": [round(t, 6) for t in times],
    }


def time_side_by_side(fns: dict[str, Callable[[], object]], repeats: int, warm_up: int = 1) -> dict[str, dict]:
    """Median/min/max seconds of each callable; one call of each in turn per repeat (after a warm-up)."""
    for _ in range(warm_up):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: summary(ts) for name, ts in times.items()}


def ratio(results: dict, num: str, den: str) -> float:
    return results[num]["median_s"] / results[den]["median_s"]


def spread(cell: dict) -> str:
    """'median (min-max)' in ms."""
    return f"{cell['median_s'] * 1e3:.1f} ({cell['min_s'] * 1e3:.0f}-{cell['max_s'] * 1e3:.0f})"


def write_json(name: str, report: dict) -> Path:
    """benchmarks/results/<name>.json, written atomically."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    return path


def read_json(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def profile_top(fn: Callable[[], object], rows: int = 8) -> list[dict]:
    """torch.profiler CPU self-time top entries of one call: where the time goes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {"op": e.key, "self_ms": round(e.self_cpu_time_total / 1e3, 2),
         "share": round(e.self_cpu_time_total / total, 3), "calls": e.count}
        for e in events[:rows]
    ]  # fmt: skip


def profile_markdown(top: list[dict]) -> str:
    return ", ".join(f"`{e['op']}` {100 * e['share']:.0f} % ({e['calls']} calls)" for e in top)
