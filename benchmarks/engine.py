"""Data-engine acceptance run and throughput: ``python -m benchmarks.engine [--n 60] [--workers 2] [--hard]``.

Generates a corpus with :mod:`clearmamba.testing.reports` (standard, or ``--hard``: turned JPEG scans, PHI burned
bottom-right / vertically / over the retina, every ID head and date format, eye labels left off, two-patient PDFs,
3-8 frames a report) plus five bad PDFs, runs the engine with OCR, and measures against the generator's truth:
readable text and planted PHI on every output image for two OCR engines (rapidocr and tesseract, 2x upscaled,
four rotations), eye/modality/time/diagnosis/exam-date accuracy, silent errors, review share, originals
byte-identical, kill -9 half-way then resume == uninterrupted, reports per second and CPU seconds per report.
``--soak N`` instead runs N reports in one run and records throughput, CPU and worker memory per window.
Writes benchmarks/results/engine[_hard|_soak].json."""

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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from clearmamba.engine.state import peek_sources, state_path

RESULTS = Path(__file__).resolve().parent / "results"


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


def accuracy(out: Path, truths: list) -> dict:
    con = sqlite3.connect(state_path(out))
    con.row_factory = sqlite3.Row
    sources = {Path(r["path"]).name: r["id"] for r in con.execute("SELECT id, path FROM sources")}
    reports = {(r["source_id"], r["idx"]): r for r in con.execute("SELECT * FROM reports")}
    outputs: dict[str, list] = {}
    for r in con.execute("SELECT * FROM outputs"):
        outputs.setdefault(r["report_id"], []).append(r)
    flagged: dict[str, set] = {}
    report_reasons: dict[str, set] = {}
    for r in con.execute("SELECT * FROM review_items"):
        report_reasons.setdefault(r["report_id"], set()).add(r["reason"])
        for oid in json.loads(r["output_ids"]):
            flagged.setdefault(oid, set()).update(r["reason"].split(", "))
    c = dict.fromkeys(["frames", "found", "eye_ok", "eye_review", "eye_silent", "mod_ok", "mod_silent",
                       "time_ok", "time_silent", "disc_compared", "disc_agree", "label_eye_wrong"], 0)
    eye_sources: dict[str, int] = {}
    matched: set[str] = set()
    diag = {"mapped_correct": 0, "sent_to_review": 0, "wrong_silent": 0}
    # "none": the printed date's day/month order is uncertain (03/07/2019), so nothing is stored
    dates = {"correct": 0, "none": 0, "wrong": 0, "birth_date_stored": 0}
    missing_reports = 0
    for t in truths:
        rep = reports.get((sources[t.file], t.index))
        if rep is None:
            missing_reports += 1
            continue
        outs = outputs.get(rep["id"], [])
        for tf in t.frames:
            c["frames"] += 1
            cands = [o for o in outs if o["page"] == tf.page]
            best = max(cands, key=lambda o: _iou(json.loads(o["rect"]), tf.bbox), default=None)
            if best is None or _iou(json.loads(best["rect"]), tf.bbox) < 0.5:
                continue
            c["found"] += 1
            matched.add(best["id"])
            reasons = flagged.get(best["id"], set())
            c["eye_ok"] += best["eye"] == tf.eye
            c["eye_review"] += "ambiguous_eye" in reasons
            c["eye_silent"] += best["eye"] != tf.eye and "ambiguous_eye" not in reasons
            c["mod_ok"] += best["modality"] == tf.modality
            c["mod_silent"] += best["modality"] != tf.modality and "unknown_modality" not in reasons
            ok_time = best["frame_time"] is not None and abs(best["frame_time"] - tf.time_s) < 0.5
            c["time_ok"] += ok_time
            c["time_silent"] += best["frame_time"] is not None and not ok_time
            if best["disc_agrees"] is not None:
                c["disc_compared"] += 1
                c["disc_agree"] += best["disc_agrees"]
            eye_sources[best["eye_source"]] = eye_sources.get(best["eye_source"], 0) + 1
        label_reasons = {"unknown_diagnosis", "ambiguous_diagnosis", "uncertain_diagnosis", "no_diagnosis",
                         "low_ocr_confidence"}
        if rep["label"] is not None and rep["label"] == t.label:
            diag["mapped_correct"] += 1
        elif label_reasons & report_reasons.get(rep["id"], set()):
            diag["sent_to_review"] += 1
        else:
            diag["wrong_silent"] += 1
        if rep["exam_date"] is None:
            dates["none"] += 1
        elif rep["exam_date"] == t.exam_date:
            dates["correct"] += 1
        else:
            dates["wrong"] += 1
        dates["birth_date_stored"] += rep["exam_date"] == t.birth_date
    all_outputs = con.execute("SELECT id, status, file FROM outputs").fetchall()
    spurious = [r for r in all_outputs if r["id"] not in matched]
    two = {}
    for t in truths:
        two.setdefault(t.file, []).append(t)
    multi = [ts for ts in two.values() if len(ts) > 1]
    separate = 0
    for ts in multi:
        reps = [reports.get((sources[t.file], t.index)) for t in ts]
        separate += all(reps) and len({r["patient"] for r in reps}) == len(reps) and all(
            r["label"] == t.label or label_reasons & report_reasons.get(r["id"], set()) for r, t in zip(reps, ts))
    con.close()
    n, found = c["frames"], max(c["found"], 1)
    return {
        "reports_true": len(truths), "reports_missing": missing_reports,
        "two_patient_pdfs": len(multi), "two_patient_pdfs_split_right": separate,
        "frames_true": n, "frames_found": c["found"],
        "spurious_outputs": len(spurious),
        "spurious_outputs_in_manifest": sum(r["status"] == "ok" for r in spurious),
        "eye_accuracy": round(c["eye_ok"] / found, 4), "modality_accuracy": round(c["mod_ok"] / found, 4),
        "frame_time_read": round(c["time_ok"] / found, 4),
        "frames_eye_to_review": c["eye_review"],
        "frames_eye_wrong_silently": c["eye_silent"],
        "frames_modality_wrong_silently": c["mod_silent"],
        "frames_time_wrong": c["time_silent"],
        "eye_decided_by": eye_sources,
        "disc_agrees_with_printed_eye": f"{c['disc_agree']} of {c['disc_compared']}",
        "review_share_frames": round(sum(r["status"] == "review" for r in all_outputs) / max(len(all_outputs), 1), 4),
        "diagnosis": diag,
        "exam_date": dates,
        "reports_with_unknown_true_diagnosis": sum(t.label is None for t in truths),
    }


def _scan_one(args) -> dict:
    """Two OCR engines on one output image: rapidocr's check (detector at 1x and 2x, on the image and turned a
    quarter, every region read at four rotations) and tesseract on the image 2x upscaled at four rotations."""
    path, planted, names = args
    import cv2
    import numpy as np

    from clearmamba.engine.deidentify import CheckConfig, residual_text
    from clearmamba.engine.ocr import TesseractEngine, get_ocr, tesseract_command

    img = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    thorough = CheckConfig(scales=(1.0, 2.0), rotations=(0, 90), always=True, max_side=1200)
    rapid = residual_text(img, get_ocr(), thorough)
    rapid_text = _squash(" ".join(b.text for b in rapid))
    result = {"file": Path(path).name, "rapidocr_text": bool(rapid),
              "rapidocr_reads": [(b.text, round(b.score, 2)) for b in rapid],
              "rapidocr_phi": [p for p in planted if p in rapid_text]}
    if tesseract_command():
        engine = TesseractEngine()
        reads = []
        for k in range(4):
            big = cv2.resize(np.ascontiguousarray(np.rot90(img, k)), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
            reads.append(" ".join(b.text for b in engine(big)))
        text = _squash(" ".join(reads))
        result["tesseract_phi"] = [p for p in planted if p in text]
        result["tesseract_digits"] = re.findall(r"\d{6,}", text)
        result["tesseract_names"] = sorted({w for w in " ".join(reads).lower().split() if w in names})
    raw = Path(path).read_bytes().lower()
    result["metadata_phi"] = [p for p in planted if p.encode() in raw]
    return result


def _second_engine_name() -> str:
    from clearmamba.engine.ocr import TesseractEngine, tesseract_command

    found = tesseract_command()
    return f"tesseract {TesseractEngine().langs} ({found[0]})" if found else "absent"


def phi_scan(out: Path, truths: list, workers: int) -> dict:
    planted = sorted({_squash(p) for t in truths for p in t.phi if len(_squash(p)) >= 4})
    names = {w.lower() for t in truths for w in t.phi[0].split() if len(w) >= 3}
    files = sorted(str(f) for sub in ("images", "quarantine") for f in (out / sub).glob("*.png"))
    with ProcessPoolExecutor(workers) as pool:
        rows = list(pool.map(_scan_one, [(f, planted, names) for f in files], chunksize=4))
    con = sqlite3.connect(state_path(out))
    shown = " ".join(r[0] for r in con.execute("SELECT fields FROM review_items"))
    shown += " ".join(str(r) for r in con.execute("SELECT * FROM outputs"))
    shown += " ".join(str(r) for r in con.execute("SELECT label, diagnosis FROM reports"))
    con.close()
    text = _squash((out / "manifest.csv").read_text() + shown)
    in_manifest = {Path(line.split(",")[0]).name for line in (out / "manifest.csv").read_text().splitlines()[1:]}

    def phi_in(r: dict) -> bool:
        return bool(r["rapidocr_phi"] or r.get("tesseract_phi") or r.get("tesseract_digits")
                    or r.get("tesseract_names") or r["metadata_phi"])

    leaking = [r for r in rows if phi_in(r)]
    return {
        "planted_strings": len(planted), "images_scanned": len(rows),
        "second_engine": _second_engine_name(),
        "images_with_readable_text_rapidocr": sum(r["rapidocr_text"] for r in rows),
        # what it read there (no planted PHI): texture on the retina read as characters, or a remnant
        "readable_text_reads": [(r["file"], r["rapidocr_reads"]) for r in rows if r["rapidocr_text"]][:20],
        "images_with_readable_phi": len(leaking),
        "images_with_readable_phi_in_manifest": sum(r["file"] in in_manifest for r in leaking),
        "leaks": leaking[:20],
        "quarantined_images": len(list((out / "quarantine").glob("*.png"))),
        "text_hits": [p for p in planted if p in text],
    }


def kill_and_resume(pdfs: Path, out: Path, workers: int, n_sources: int) -> dict:
    from clearmamba.engine.pipeline import run

    src = str(Path(__file__).resolve().parents[1] / "src")
    code = f"from clearmamba.engine.pipeline import run; run({str(pdfs)!r}, {str(out)!r}, workers={workers}, " \
           "progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": src},
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = 0
    while proc.poll() is None:
        counts = peek_sources(out)
        if counts is not None:
            done = _finished(counts)
            if done >= n_sources // 2:
                break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # the run alone, as the OOM killer would: its workers must follow
    proc.wait()
    time.sleep(1.0)
    orphans = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
    t0 = time.time()
    run(pdfs, out, workers=workers, progress=False)
    return {"killed_after_sources": done, "of_sources": n_sources, "orphan_workers_after_kill": len(orphans),
            "resume_seconds": round(time.time() - t0, 1)}


def _finished(counts: dict[str, int]) -> int:
    """Sources done or failed, from :func:`peek_sources`."""
    return sum(n for status, n in counts.items() if status != "pending")


def _proc_sample(pid: int) -> tuple[float, float]:
    """(RSS in MB, CPU seconds) of a live process from /proc; (0, 0) when it is gone."""
    try:
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:")) / 1024
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return rss, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return 0.0, 0.0


def _workers(parent: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                kids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return kids


def soak(args, style) -> dict:
    """One run over ``--soak`` reports (one pool, workers living through all of them), sampled every second:
    reports committed, RSS of the run and of each worker, CPU seconds; summarised per ``--window`` reports."""
    import threading

    from clearmamba.engine.pipeline import run
    from clearmamba.testing.reports import generate_corpus

    with tempfile.TemporaryDirectory(prefix="engine-soak-") as tmp:
        tmp = Path(tmp)
        t0 = time.time()
        generate_corpus(tmp / "pdfs", args.soak, seed=args.seed, style=style)
        gen_s = time.time() - t0
        samples, stop = [], threading.Event()

        def sample() -> None:
            start = time.time()
            while not stop.wait(1.0):
                counts = peek_sources(tmp / "out")
                if counts is None:  # busy: skip this sample
                    continue
                done = _finished(counts)
                own = _proc_sample(os.getpid())
                kids = [_proc_sample(k) for k in _workers(os.getpid())]
                samples.append({"t": time.time() - start, "done": done, "parent_rss_mb": own[0],
                                "worker_rss_mb": [round(k[0], 1) for k in kids],
                                "cpu_s": own[1] + sum(k[1] for k in kids), "load": os.getloadavg()[0]})

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t0 = time.time()
        run(tmp / "pdfs", tmp / "out", workers=args.workers, progress=False)
        wall = time.time() - t0
        stop.set()
        thread.join()
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # the pool's workers, reaped at the end of the run
        samples.append({"t": wall, "done": args.soak, "parent_rss_mb": _proc_sample(os.getpid())[0],
                        "worker_rss_mb": samples[-1]["worker_rss_mb"] if samples else [],
                        "cpu_s": _proc_sample(os.getpid())[1] + kids.ru_utime + kids.ru_stime,
                        "load": os.getloadavg()[0]})
        db_mb = state_path(tmp / "out").stat().st_size / 2**20
    # a live sample that already counts every report may come after the workers exited (their CPU missing from
    # /proc): the last window ends at the sample taken after the run, which has the reaped workers' CPU
    ends = [x for x in samples[:-1] if x["done"] < args.soak] + samples[-1:]
    windows, last = [], {"t": 0.0, "done": 0, "cpu_s": 0.0}
    for edge in range(args.window, args.soak + 1, args.window):
        at = next((x for x in ends if x["done"] >= edge), None)
        if at is None:
            break
        inside = [x for x in samples if last["done"] <= x["done"] <= at["done"] and x["worker_rss_mb"]]
        n = at["done"] - last["done"]
        windows.append({
            "reports_done": at["done"],
            "reports_per_second": round(n / max(at["t"] - last["t"], 1e-9), 3),
            "cpu_seconds_per_report": round((at["cpu_s"] - last["cpu_s"]) / max(n, 1), 3),
            "worker_rss_mb_max": round(max((max(x["worker_rss_mb"]) for x in inside), default=0.0), 1),
            "worker_rss_mb_at_end": at["worker_rss_mb"],
            "parent_rss_mb": round(at["parent_rss_mb"], 1),
            "load_avg_1m": round(at["load"], 2),
        })
        print(json.dumps(windows[-1]), flush=True)
        last = at
    return {"reports": args.soak, "generate_seconds": round(gen_s, 1), "run_seconds": round(wall, 1),
            "reports_per_second": round(args.soak / wall, 3), "state_db_mb": round(db_mb, 2), "windows": windows}


def main(argv: list[str] | None = None) -> dict:
    from clearmamba.engine.pipeline import canonical_state, run
    from clearmamba.testing.bad_pdfs import write_bad_pdfs
    from clearmamba.testing.reports import HARD, STANDARD, generate_corpus

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=60, help="PDFs (a two-patient PDF holds two reports)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hard", action="store_true", help="the harder corpus (clearmamba.testing.reports.HARD)")
    ap.add_argument("--soak", type=int, default=0, help="run this many reports in windows (memory, throughput)")
    ap.add_argument("--window", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/engine[_hard|_soak].json")
    args = ap.parse_args(argv)
    style = HARD if args.hard else STANDARD
    name = "engine_soak" if args.soak else "engine_hard" if args.hard else "engine"
    args.out = args.out or RESULTS / f"{name}.json"
    command = "python -m benchmarks.engine " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    if args.soak:
        result = {"command": command, "style": style.name, "machine": machine, **soak(args, style)}
    else:
        with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
            tmp = Path(tmp)
            pdfs = tmp / "pdfs"
            t0 = time.time()
            truths = generate_corpus(pdfs / "reports", args.n, seed=args.seed, style=style)
            write_bad_pdfs(pdfs / "bad", pdfs / "reports" / "report_0000.pdf")
            gen_s = time.time() - t0
            before = _hashes(pdfs)
            load_before = os.getloadavg()[0]
            cpu0, t0 = _cpu_seconds(), time.time()
            counts = run(pdfs, tmp / "out", workers=args.workers, progress=True)
            run_s = time.time() - t0
            cpu_s = _cpu_seconds() - cpu0  # parent + finished pool workers: independent of other load
            load_after = os.getloadavg()[0]
            after = _hashes(pdfs)
            acc = accuracy(tmp / "out", truths)
            phi = phi_scan(tmp / "out", truths, args.workers)
            resume = kill_and_resume(pdfs, tmp / "resumed", args.workers, len(before))
            equal = canonical_state(tmp / "resumed", pdfs) == canonical_state(tmp / "out", pdfs)
            stats: dict = {}
            with sqlite3.connect(state_path(tmp / "out")) as con:
                for (raw,) in con.execute("SELECT stats FROM sources WHERE stats IS NOT NULL"):
                    for k, v in json.loads(raw).items():
                        stats[k] = stats.get(k, 0) + v
        result = {
            "command": command, "style": style.name, "machine": machine,
            "pdfs": args.n, "reports": len(truths), "bad_pdfs": 5,
            "scanned_reports": sum(t.scanned for t in truths),
            "chinese_reports": sum(t.language == "zh" for t in truths),
            "generate_seconds": round(gen_s, 1), "run_seconds": round(run_s, 1),
            "reports_per_second": round(len(truths) / run_s, 3),
            "cpu_seconds_per_report": round(cpu_s / len(truths), 3),
            "reports_per_second_on_idle_cores_estimate": round(
                min(args.workers, os.cpu_count() or 1) * len(truths) / cpu_s, 3),
            "load_avg_1m_before_and_after_run": [round(load_before, 2), round(load_after, 2)],
            "counts": counts, "panel_stats": stats, **acc, "phi": phi,
            "originals_byte_identical": before == after,
            "resume": resume | {"equal_to_uninterrupted": equal},
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return result


if __name__ == "__main__":
    main()
