"""Model throughput: the demo CLEAR-Mamba vs the same CLEAR wrapper on a MONAI ResNet-18 backbone.

Both get the demo's input (exams of 6 frames, 1 channel, 32x32; the demo's batch of 8 exams) and the
same evidential head and temporal Mamba, so the backbone is the only difference. Training = one AdamW
step with the demo's loss; inference = one no-grad forward. Throughput is frames (images) per second;
the two models are timed round-robin in one process. Peak memory is measured in a fresh subprocess
per model and pass: ``ru_maxrss`` growth over the resident set just before the measured calls
(tracemalloc does not see torch's allocations).

    python -m benchmarks.model [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.common import ROOT, describe, machine, spread, time_side_by_side, write_json

EXAMS, FRAMES, SIZE, CLASSES = 8, 6, 32, 3
HEAD = {"head": "evidential", "temporal": "mamba", "hac": True}
# training/demo.py DemoConfig: MedMamba-nano at half width, d_state 4
MODELS = {
    "clear_mamba_demo": ("clear_mamba_tiny", {**HEAD, "backbone_kwargs": {"dims": (8, 16, 32, 64), "d_state": 4}}),
    "clear_resnet18": ("clear_resnet18", dict(HEAD)),
}


def build(name: str) -> torch.nn.Module:
    import clearmamba.models.baselines  # noqa: F401  (registers clear_resnet18)
    from clearmamba.models import create_model

    arch, kwargs = MODELS[name]
    torch.manual_seed(0)
    return create_model(arch, num_classes=CLASSES, in_chans=1, **kwargs)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(EXAMS, FRAMES, 1, SIZE, SIZE, generator=gen), torch.randint(0, CLASSES, (EXAMS,), generator=gen)


def steps(model: torch.nn.Module, exams: int = EXAMS):
    """(train_step, infer) closures with the demo's loss and optimizer."""
    from clearmamba.training import TrainConfig, build_optimizer
    from clearmamba.uncertainty import create_method

    x, y = batch()
    x, y = x[:exams], y[:exams]
    method = create_method(model.prediction_kind)  # the demo's loss for this head (RaP: KL 0.05 fixed)
    optimizer = build_optimizer(model, TrainConfig())

    def train_step():
        model.train()
        loss = method.loss(model(x), y, epoch=0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def infer():
        model.eval()
        model(x)

    return train_step, infer


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


class RssSampler:
    """Peak resident set while inside the block, sampled every millisecond by a thread.

    ``ru_maxrss`` cannot be reset, so after the warm-up it only shows the warm-up's peak; torch ops
    release the GIL, so a sampling thread sees the allocations of the measured calls.
    """

    def __enter__(self):
        import threading

        self.before = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        return False


def peak_memory_worker(name: str, mode: str, threads: int) -> None:
    """Child process: prints the peak RSS growth in MB during two full-batch calls, as JSON.

    A one-exam call first loads libraries (and the fused scan kernel) so their pages are not counted.
    """
    torch.set_num_threads(threads)
    model = build(name)
    warm = steps(model, exams=1)
    (warm[0] if mode == "train" else warm[1])()
    train_step, infer = steps(model)
    call = train_step if mode == "train" else infer
    with RssSampler() as sampler:
        call()
        call()
    growth = (sampler.peak - sampler.before) / 2**20
    print(json.dumps({"peak_growth_mb": growth, "rss_before_mb": sampler.before / 2**20}))


def peak_memory(name: str, mode: str, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.model", "--memory-worker", name, mode, "--threads", str(threads)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(repeats: int = 5, threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    host = machine()
    models = {name: build(name) for name in MODELS}
    closures = {name: steps(m) for name, m in models.items()}
    train = time_side_by_side({n: c[0] for n, c in closures.items()}, repeats)
    infer = time_side_by_side({n: c[1] for n, c in closures.items()}, repeats)
    images = EXAMS * FRAMES
    report = {
        "command": f"python -m benchmarks.model --repeats {repeats} --threads {threads}",
        "machine": host,
        "input": {"exams": EXAMS, "frames": FRAMES, "channels": 1, "size": SIZE, "images_per_batch": images},
        "models": {},
    }
    for name, m in models.items():
        report["models"][name] = {
            "arch": MODELS[name][0],
            "parameters": sum(p.numel() for p in m.parameters()),
            "train": {**train[name], "images_per_s": images / train[name]["median_s"]},
            "infer": {**infer[name], "images_per_s": images / infer[name]["median_s"]},
            "peak_memory_mb": {mode: peak_memory(name, mode, threads)["peak_growth_mb"] for mode in ("train", "infer")},
        }
    write_json("model", report)
    return report


def markdown(report: dict) -> str:
    m, r = report["models"]["clear_mamba_demo"], report["models"]["clear_resnet18"]
    inp = report["input"]
    lines = [
        "## Model throughput (`python -m benchmarks.model`)",
        "",
        f"Command: `{report['command']}`. Machine: {describe(report['machine'])}. Input: batches of "
        f"{inp['exams']} exams x {inp['frames']} frames x {inp['channels']} channel x {inp['size']}x{inp['size']} "
        f"({inp['images_per_batch']} images), as in `clearmamba demo`. Both models have the evidential head and the "
        "temporal Mamba; only the backbone differs. Round-robin repeats in one process; memory from a fresh "
        "subprocess per cell (peak RSS growth, sampled every ms, during two full-batch calls after a one-exam "
        "warm-up call has loaded the libraries).",
        "",
        "Headline: CLEAR-Mamba (demo) relative to the MONAI ResNet-18 version (> 1 = CLEAR-Mamba faster / larger).",
        "",
        "| pass | images/s ratio (CLEAR-Mamba / ResNet-18) | peak memory ratio |",
        "|---|---|---|",
    ]
    for mode in ("train", "infer"):
        speed = m[mode]["images_per_s"] / r[mode]["images_per_s"]
        mem = m["peak_memory_mb"][mode] / max(r["peak_memory_mb"][mode], 1e-9)
        lines.append(f"| {'training step' if mode == 'train' else 'inference'} | {speed:.2f}x | {mem:.2f}x |")
    lines += [
        "",
        "| model | parameters | pass | ms per batch, median (min-max) | images/s | peak memory growth (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for name, cell in report["models"].items():
        for mode in ("train", "infer"):
            lines.append(
                f"| {name} (`{cell['arch']}`) | {cell['parameters']:,} | {mode} | {spread(cell[mode])} | "
                f"{cell[mode]['images_per_s']:.0f} | {cell['peak_memory_mb'][mode]:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--memory-worker", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        peak_memory_worker(*args.memory_worker, args.threads)
        return
    print(markdown(run(args.repeats, args.threads)))


if __name__ == "__main__":
    main()
