from __future__ import annotations

import csv
import hashlib
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import clearmamba
from clearmamba.engine.pipeline import CRASH_ENV, canonical_state, run, status
from clearmamba.engine.state import peek_sources

SRC = str(Path(clearmamba.__file__).resolve().parents[1])


def _tree_hashes(root: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    before = _tree_hashes(corpus["root"])
    out = tmp_path_factory.mktemp("run") / "out"
    counts = run(corpus["root"], out, workers=2, progress=False)
    return out, counts, before


def _run_subprocess(pdf_root: Path, out: Path, workers: int, env_extra: dict | None = None):
    code = (
        "from clearmamba.engine.pipeline import run; "
        f"run({str(pdf_root)!r}, {str(out)!r}, workers={workers}, progress=False)"
    )
    env = {**os.environ, "PYTHONPATH": SRC, **(env_extra or {})}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_run_counts_bad_pdfs_and_keeps_originals(corpus, uninterrupted):
    out, counts, before = uninterrupted
    assert counts["sources"] == {"done": 3, "failed": 5}
    assert counts["failed"] == {"bomb": 2, "encrypted": 1, "not_pdf": 1, "truncated": 1}
    assert counts["review_open"] == {"unknown_diagnosis": 1}  # every eye label printed: no eye to review
    assert _tree_hashes(corpus["root"]) == before  # originals byte-identical, not even touched
    log = (out / "private" / "errors.log").read_text()
    assert log.count("\n") == 5 and "bad_truncated.pdf" in log


def test_manifest_format_pseudonyms_and_private_files(corpus, uninterrupted):
    out, _, _ = uninterrupted
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "exam_id", "patient_id", "eye", "modality", "frame_time", "label"]
    # b_zh (unknown diagnosis) waits in review; a_en and c_scan give 4 frames each
    assert len(rows) == 8
    assert {r["label"] for r in rows} == {"diabetic_retinopathy", "central_serous"}
    assert all((out / r["path"]).is_file() and r["path"].startswith("images/") for r in rows)
    # the same real patient (a_en, c_scan) gets one pseudonym, never the real ID
    assert len({r["patient_id"] for r in rows}) == 1
    real_ids = {t.patient_id for t in corpus["truths"].values()}
    text = (out / "manifest.csv").read_text()
    phi = {re.sub(r"\s", "", p).lower() for t in corpus["truths"].values() for p in t.phi}
    assert not [p for p in phi if p in re.sub(r"\s", "", text).lower()]
    assert not real_ids & {r["patient_id"] for r in rows}
    # frames of one exam share eye and modality and are in time order (deterministic ties: page, position)
    exams: dict[str, list] = {}
    for r in rows:
        exams.setdefault(r["exam_id"], []).append(r)
    for frames in exams.values():
        assert len({(f["eye"], f["modality"]) for f in frames}) == 1
        times = [float(f["frame_time"]) for f in frames]
        assert times == sorted(times)
    for name in ("id_map.csv", "secret.key", "state.sqlite"):
        assert stat.S_IMODE((out / "private" / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((out / "private").stat().st_mode) == 0o700
    id_map = (out / "private" / "id_map.csv").read_text()
    assert all(Path(r["path"]).stem in id_map for r in rows) and "a_en.pdf" in id_map


def test_rerun_skips_finished_work(corpus, uninterrupted, tmp_path):
    out, counts, _ = uninterrupted
    state_before = canonical_state(out, corpus["root"])
    files_before = sorted(p.name for p in (out / "images").iterdir())
    assert run(corpus["root"], out, workers=1, progress=False) == counts
    assert canonical_state(out, corpus["root"]) == state_before
    assert sorted(p.name for p in (out / "images").iterdir()) == files_before
    assert status(out) == counts


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    kids = []
    for proc_stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = proc_stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(proc_stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def test_crash_between_image_write_and_commit_resumes_exactly(corpus, uninterrupted, tmp_path):
    out = tmp_path / "out"
    proc = _run_subprocess(corpus["root"], out, 1, {CRASH_ENV: "2"})
    workers: list[int] = []
    while proc.poll() is None:
        workers = _children(proc.pid) or workers
        time.sleep(0.02)
    assert proc.wait(timeout=120) == -signal.SIGKILL
    assert workers and _wait_gone(workers) == []  # the run's pool worker died with it: no orphan
    partial = canonical_state(out, corpus["root"])
    assert partial["n_files"] > partial["n_outputs"]  # report 2's images are on disk, uncommitted
    run(corpus["root"], out, workers=1, progress=False)
    assert canonical_state(out, corpus["root"]) == canonical_state(uninterrupted[0], corpus["root"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_when_the_run_alone_is_killed(corpus, tmp_path):
    """kill -9 of the run's pid only (as the OOM killer does), not its process group: no worker survives."""
    proc = _run_subprocess(corpus["root"], tmp_path / "out", 2)
    deadline, workers = time.time() + 60, []
    while time.time() < deadline and len(workers) < 2 and proc.poll() is None:
        workers = _children(proc.pid)
        time.sleep(0.02)
    assert len(workers) == 2, "the pool must be running before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert _wait_gone(workers) == []


def test_kill9_mid_run_then_resume_equals_uninterrupted(corpus, uninterrupted, tmp_path):
    out = tmp_path / "out"
    proc = _run_subprocess(corpus["root"], out, 2)
    done, deadline = 0, time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = (peek_sources(out) or {}).get("done", 0)
        if done >= 1:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its pool workers, as a power cut would
    proc.wait(timeout=30)
    assert 1 <= done < 3, "the kill must land mid-run"
    run(corpus["root"], out, workers=2, progress=False)
    assert canonical_state(out, corpus["root"]) == canonical_state(uninterrupted[0], corpus["root"])


def test_byte_identical_copies_are_processed_once(corpus, tmp_path):
    pdfs = tmp_path / "pdfs"
    (pdfs / "copy").mkdir(parents=True)
    data = (corpus["reports"] / "a_en.pdf").read_bytes()
    (pdfs / "a.pdf").write_bytes(data)
    (pdfs / "copy" / "a.pdf").write_bytes(data)
    counts = run(pdfs, tmp_path / "out", workers=1, progress=False)
    n = len(corpus["truths"]["a_en.pdf"].frames)
    assert counts["sources"] == {"done": 1, "duplicate": 1}
    assert counts["outputs"] == {"ok": n}
    assert len(list((tmp_path / "out" / "images").iterdir())) == n


def test_a_report_that_kills_its_worker_is_recorded_and_the_run_goes_on(corpus, tmp_path, monkeypatch):
    from clearmamba.engine.pipeline import WORKER_CRASH_ENV

    pdfs = tmp_path / "pdfs"
    pdfs.mkdir()
    for name in ("a_en.pdf", "b_zh.pdf"):
        (pdfs / name).write_bytes((corpus["reports"] / name).read_bytes())
    monkeypatch.setenv(WORKER_CRASH_ENV, "b_zh.pdf")  # the worker dies as in a segfault
    counts = run(pdfs, tmp_path / "out", workers=2, progress=False)
    assert counts["sources"] == {"done": 1, "failed": 1}
    assert counts["failed"] == {"worker_crash": 1}
    n = len(corpus["truths"]["a_en.pdf"].frames)
    assert len(list((tmp_path / "out" / "images").iterdir())) == counts["outputs"]["ok"] == n
    assert "worker_crash" in (tmp_path / "out" / "private" / "errors.log").read_text()


def test_bad_out_and_input_folders_are_user_errors(corpus, tmp_path):
    from clearmamba.engine.errors import InputFolderError, NoStateError, OutFolderError
    from clearmamba.errors import UserError

    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.md").write_text("someone's notes")
    cases = [
        (lambda: run(tmp_path / "missing", tmp_path / "o1", progress=False), InputFolderError, "missing: no such"),
        (lambda: run(tmp_path / "file.txt", tmp_path / "o2", progress=False), InputFolderError, "is a file"),
        (lambda: run(corpus["reports"], tmp_path / "file.txt", progress=False), OutFolderError, "--out .*is a file"),
        (lambda: run(corpus["reports"], tmp_path / "taken", progress=False), OutFolderError, "notes.md"),
        (lambda: status(tmp_path / "nowhere"), NoStateError, "--out .*nowhere.*engine run"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message) as info:
            call()
        assert isinstance(info.value, UserError)
    assert not (tmp_path / "taken" / "private").exists()  # refused before anything was written


def test_state_of_an_older_engine_is_refused_not_mixed(corpus, tmp_path):
    from clearmamba.engine.errors import OutFolderError

    private = tmp_path / "old" / "private"
    private.mkdir(parents=True)
    with sqlite3.connect(private / "state.sqlite") as con:  # schema 1: one report per source, no schema key
        con.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("CREATE TABLE sources(id TEXT PRIMARY KEY, path TEXT, status TEXT, patient TEXT)")
    with pytest.raises(OutFolderError, match="older clearmamba.*new --out"):
        run(corpus["reports"], tmp_path / "old", progress=False)
