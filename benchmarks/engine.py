"""Data-engine acceptance run and throughput: ``python -m benchmarks.engine [--n 60] [--workers 2]``.

Generates English/Chinese reports (born-digital and scanned, burned-in PHI, two-eye composites) plus five bad
PDFs, runs the engine with OCR, and measures: eye/modality/frame-time accuracy against the generator's truth,
diagnosis mapped / sent to review / wrong-silently, planted PHI strings that OCR can still read on any output
image or find in any output text, originals byte-identical, kill -9 half-way then resume == uninterrupted, and
reports per second. Writes benchmarks/results/engine.json."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "engine.json"


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s).lower()


def _hashes(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.pdf"))}


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union if union > 0 else 0.0


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def accuracy(out: Path, pdfs: Path, truths: list[dict]) -> dict:
    con = sqlite3.connect(out / "private" / "state.sqlite")
    con.row_factory = sqlite3.Row
    sources = {Path(r["path"]).name: r for r in con.execute("SELECT * FROM sources")}
    frames = {}
    for r in con.execute("SELECT * FROM outputs"):
        frames.setdefault(r["source_id"], []).append(r)
    review, flagged = {}, {}
    for r in con.execute("SELECT * FROM review_items"):
        review.setdefault(r["source_id"], []).append(r["reason"])
        for oid in json.loads(r["output_ids"]):
            flagged.setdefault(oid, set()).update(r["reason"].split(", "))
    n = eye_ok = mod_ok = time_ok = found = eye_review = eye_silent = mod_silent = 0
    eye_sources: dict[str, int] = {}
    matched: set[str] = set()
    diag = {"mapped_correct": 0, "sent_to_review": 0, "wrong_silent": 0}
    for t in truths:
        src = sources[t["file"]]
        outs = frames.get(src["id"], [])
        for tf in t["frames"]:
            n += 1
            cands = [o for o in outs if o["page"] == tf["page"]]
            best = max(cands, key=lambda o: _iou(json.loads(o["rect"]), tf["bbox"]), default=None)
            if best is None or _iou(json.loads(best["rect"]), tf["bbox"]) < 0.5:
                continue
            found += 1
            matched.add(best["id"])
            eye_ok += best["eye"] == tf["eye"]
            mod_ok += best["modality"] == tf["modality"]
            time_ok += best["frame_time"] is not None and abs(best["frame_time"] - tf["time_s"]) < 0.5
            reasons = flagged.get(best["id"], set())
            eye_review += "ambiguous_eye" in reasons
            eye_silent += best["eye"] != tf["eye"] and "ambiguous_eye" not in reasons
            mod_silent += best["modality"] != tf["modality"] and "unknown_modality" not in reasons
            eye_sources[best["eye_source"]] = eye_sources.get(best["eye_source"], 0) + 1
        label_reasons = {"unknown_diagnosis", "ambiguous_diagnosis", "uncertain_diagnosis", "no_diagnosis",
                         "low_ocr_confidence"}
        if src["label"] is not None and src["label"] == t["label"]:
            diag["mapped_correct"] += 1
        elif label_reasons & set(review.get(src["id"], [])):
            diag["sent_to_review"] += 1
        else:
            diag["wrong_silent"] += 1
    spurious = [r for r in con.execute("SELECT id, status FROM outputs") if r["id"] not in matched]
    con.close()
    return {
        "frames_true": n, "frames_found": found,
        # outputs that match no true frame (a bad split); they must not reach the manifest unreviewed
        "spurious_outputs": len(spurious),
        "spurious_outputs_in_manifest": sum(r["status"] == "ok" for r in spurious),
        "eye_accuracy": eye_ok / n, "modality_accuracy": mod_ok / n, "frame_time_accuracy": time_ok / n,
        "frames_flagged_ambiguous_eye": eye_review,
        "frames_eye_wrong_silently": eye_silent,
        "frames_modality_wrong_silently": mod_silent,
        "eye_decided_by": eye_sources,
        "diagnosis": diag,
        "reports_with_unknown_true_diagnosis": sum(t["label"] is None for t in truths),
    }


def phi_scan(out: Path, truths: list[dict]) -> dict:
    """OCR on every output image (released and quarantined) and a text search of every output file the
    dataset user or reviewer sees, for every planted PHI string."""
    import cv2

    from clearmamba.engine.ocr import get_ocr

    ocr = get_ocr()
    planted = sorted({_squash(p) for t in truths for p in t["phi"]})
    image_hits, n_images = [], 0
    for sub in ("images", "quarantine"):
        for f in sorted((out / sub).glob("*.png")):
            n_images += 1
            text = _squash(" ".join(b.text for b in ocr(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))))
            image_hits += [(f.name, p) for p in planted if p in text]
            raw = f.read_bytes()
            image_hits += [(f.name, p) for p in planted if p.encode() in raw.lower()]  # metadata chunks
    con = sqlite3.connect(out / "private" / "state.sqlite")
    shown = " ".join(r[0] for r in con.execute("SELECT fields FROM review_items"))
    shown += " ".join(str(r) for r in con.execute("SELECT * FROM outputs"))
    con.close()
    text = _squash((out / "manifest.csv").read_text() + shown)
    text_hits = [p for p in planted if p in text]
    second = _second_opinion(out, planted)
    return {"planted_strings": len(planted), "images_scanned": n_images, "image_hits": image_hits,
            "text_hits": text_hits, "second_engine": second}


def _second_opinion(out: Path, planted: list[str], every: int = 4) -> dict | None:
    """The same search with tesseract, an OCR engine independent of the one that guided the erasure, on every
    ``every``-th image (it takes ~1.5 s an image). None when tesseract is not installed."""
    import shutil

    import cv2

    from clearmamba.engine.ocr import TesseractEngine

    if shutil.which("tesseract") is None:
        return None
    engine = TesseractEngine()
    files = sorted(f for sub in ("images", "quarantine") for f in (out / sub).glob("*.png"))[::every]
    hits = []
    for f in files:
        text = _squash(" ".join(b.text for b in engine(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))))
        hits += [(f.name, p) for p in planted if p in text]
    return {"engine": "tesseract eng+chi_sim", "images_scanned": len(files), "image_hits": hits}


def kill_and_resume(pdfs: Path, out: Path, workers: int, n_sources: int) -> dict:
    from clearmamba.engine.pipeline import run

    src = str(Path(__file__).resolve().parents[1] / "src")
    code = (
        "from clearmamba.engine.pipeline import run; "
        f"run({str(pdfs)!r}, {str(out)!r}, workers={workers}, progress=False)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": src},
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db, done = out / "private" / "state.sqlite", 0
    while proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                    done = con.execute("SELECT COUNT(*) FROM sources WHERE status!='pending'").fetchone()[0]
            except sqlite3.OperationalError:
                pass
            if done >= n_sources // 2:
                break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.time()
    run(pdfs, out, workers=workers, progress=False)
    resume_s = round(time.time() - t0, 1)
    return {"killed_after_sources": done, "of_sources": n_sources, "resume_seconds": resume_s}


def main(argv: list[str] | None = None) -> dict:
    from clearmamba.engine.pipeline import canonical_state, run
    from clearmamba.engine.synthetic import Style, cjk_font_path, generate_reports, write_bad_pdfs

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/engine[_hard].json")
    ap.add_argument("--hard", action="store_true", help="30%% of eye labels left off, JPEG q60 images")
    args = ap.parse_args(argv)
    style = Style(label_dropout=0.3, jpeg_quality=60) if args.hard else Style()
    args.out = args.out or RESULTS.with_name("engine_hard.json" if args.hard else "engine.json")
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        tmp = Path(tmp)
        pdfs = tmp / "pdfs"
        t0 = time.time()
        truths = [t.__dict__ | {"frames": [f.__dict__ for f in t.frames]}
                  for t in generate_reports(pdfs / "reports", args.n, seed=args.seed, style=style)]
        write_bad_pdfs(pdfs / "bad", pdfs / "reports" / "report_0000.pdf")
        gen_s = time.time() - t0
        before = _hashes(pdfs)
        load_before = os.getloadavg()[0]
        cpu0 = _cpu_seconds()
        t0 = time.time()
        counts = run(pdfs, tmp / "out", workers=args.workers, progress=True)
        run_s = time.time() - t0
        cpu_s = _cpu_seconds() - cpu0  # parent + finished pool workers: independent of other load
        after = _hashes(pdfs)
        acc = accuracy(tmp / "out", pdfs, truths)
        phi = phi_scan(tmp / "out", truths)
        n_sources = len(before)
        resume = kill_and_resume(pdfs, tmp / "resumed", args.workers, n_sources)
        equal = canonical_state(tmp / "resumed", pdfs) == canonical_state(tmp / "out", pdfs)
    result = {
        "command": f"python -m benchmarks.engine --n {args.n} --workers {args.workers} --seed {args.seed}"
        + (" --hard" if args.hard else ""),
        "style": style.__dict__,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "reports": args.n, "bad_pdfs": 5,
        "scanned_reports": sum(t["scanned"] for t in truths),
        "chinese_reports": sum(t["language"] == "zh" for t in truths),
        "cjk_font": bool(cjk_font_path()),
        "generate_seconds": round(gen_s, 1),
        "run_seconds": round(run_s, 1),
        "reports_per_second": round(args.n / run_s, 3),
        "cpu_seconds_per_report": round(cpu_s / args.n, 3),
        "reports_per_second_idle_estimate": round(min(args.workers, os.cpu_count() or 1) * args.n / cpu_s, 3),
        "load_avg_1m_before_run": round(load_before, 2),
        "counts": counts,
        **acc,
        "phi": phi,
        "originals_byte_identical": before == after,
        "resume": resume | {"equal_to_uninterrupted": equal},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
