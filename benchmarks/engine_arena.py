"""ONNX Runtime's allocator arena on and off for the engine's OCR, side by side on the same images.

The images are the panels of a small generated standard corpus; each round runs every image through detection
and reading with one engine, then with the other, so machine load hits both alike. Written to
``benchmarks/results/engine_arena.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import RESULTS_DIR, machine


def main(argv: list[str] | None = None) -> dict:
    from clearmamba.engine.extract import extract
    from clearmamba.engine.ocr import RapidOcrEngine
    from clearmamba.testing.reports import STANDARD, generate_corpus

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=12, help="PDFs whose images are timed")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    engines = {"arena off (rapidocr's default)": RapidOcrEngine(arena=False), "arena on": RapidOcrEngine()}
    with tempfile.TemporaryDirectory(prefix="engine-arena-") as tmp:
        generate_corpus(Path(tmp), args.n, seed=0, style=STANDARD)
        reader = engines["arena on"]  # scanned pages need OCR to be cut into images
        images = [im.pixels for pdf in sorted(Path(tmp).glob("*.pdf")) for im in extract(pdf, ocr=reader).images]
    cpu = {name: [] for name in engines}
    for _ in range(args.rounds):
        for name, engine in engines.items():
            t0 = time.process_time()
            for image in images:
                engine(image)
            cpu[name].append(time.process_time() - t0)
    off, on = (sum(v) for v in cpu.values())
    result = {
        "command": "python -m benchmarks.engine_arena " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine(),
        "images": len(images),
        "cpu_seconds_per_round": {k: [round(x, 2) for x in v] for k, v in cpu.items()},
        "cpu_off_over_on": round(off / on, 3),
    }
    out = RESULTS_DIR / "engine_arena.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
