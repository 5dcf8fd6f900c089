"""Time the built-in simulator: 2,000 exams of 8x64x64 (target: under 30 s on 2 cores).

Writes benchmarks/results/data.json. Reports wall time and process CPU time, cold (vessel-tree bank built
inside the timing) and warm, with the machine's load average, because shared machines slow wall time down.
Run: PYTHONPATH=src python benchmarks/data.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from clearmamba.data.anatomy import template_bank
from clearmamba.data.angiography import SimulatorConfig, simulate_exams


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    torch.set_num_threads(2)
    cfg = SimulatorConfig()
    results = {"exams": 2000, "shape": [cfg.frames, cfg.channels, cfg.size, cfg.size], "threads": 2}
    template_bank.cache_clear()
    _, wall, cpu = timed(lambda: simulate_exams(2000, cfg, seed=123))
    results["cold_wall_s"], results["cold_cpu_s"] = round(wall, 2), round(cpu, 2)
    _, wall, cpu = timed(lambda: simulate_exams(2000, cfg, seed=123))
    results["warm_wall_s"], results["warm_cpu_s"] = round(wall, 2), round(cpu, 2)
    results["load_average_1min"] = round(os.getloadavg()[0], 2)
    results["cpu_count"] = os.cpu_count()
    results["python"] = platform.python_version()
    results["torch"] = torch.__version__
    out = Path(__file__).parent / "results" / "data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
