"""The run: register the PDFs, process the pending ones over a process pool, commit each report atomically,
export the manifest. Re-running skips finished reports; a killed run resumes where it stopped.

Output folder::

    manifest.csv          path, exam_id, patient_id, eye, modality, frame_time, label (loader format)
    images/<random>.png   de-identified single-eye frames
    quarantine/<random>.png  frames where OCR still read PHI after erasure (shown only in review)
    private/              0700: state.sqlite, id_map.csv (new id -> source file), secret.key, errors.log
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from clearmamba.engine.errors import InputFolderError, NoStateError, OutFolderError
from clearmamba.engine.extract import DEFAULT_LIMITS, Limits
from clearmamba.engine.state import State, state_path, write_private

CRASH_ENV = "CLEARMAMBA_ENGINE_CRASH_BEFORE_COMMIT"  # fault injection for the resume tests: SIGKILL self
WORKER_CRASH_ENV = "CLEARMAMBA_ENGINE_CRASH_WORKER_ON"  # fault injection: a worker dies on this file name


def check_out(out_dir: Path) -> None:
    """``--out`` must be a new or empty folder, or the output folder of an earlier run (to resume)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutFolderError(f"--out {out_dir}: is a file; expected a folder (new, empty, or an earlier run's)")
    if out_dir.is_dir() and not state_path(out_dir).exists():
        stray = sorted(p.name for p in out_dir.iterdir() if p.name not in ("images", "quarantine", "private"))
        if stray:
            shown = ", ".join(stray[:3]) + (", ..." if len(stray) > 3 else "")
            raise OutFolderError(f"--out {out_dir}: a folder with other files ({shown}) and no engine state; "
                                 "expected a new or empty folder, or an earlier run's output to resume")


def prepare_out(out_dir: Path) -> tuple[State, bytes]:
    check_out(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for sub in ("images", "quarantine"):
            (out_dir / sub).mkdir(exist_ok=True)
        private = out_dir / "private"
        private.mkdir(mode=0o700, exist_ok=True)
        os.chmod(private, 0o700)
        key_file = private / "secret.key"
        if not key_file.exists():
            write_private(key_file, os.urandom(32))
        return State(state_path(out_dir)), key_file.read_bytes()
    except PermissionError as err:
        raise OutFolderError(f"--out {out_dir}: cannot write there ({err.strerror}: {err.filename}); "
                             "expected a folder you can write to") from None


def remove_orphans(state: State, out_dir: Path) -> int:
    """Delete images written for reports whose commit never happened (a killed run) and stray temp files."""
    keep = state.referenced_files()
    removed = 0
    for sub in ("images", "quarantine"):
        for f in (out_dir / sub).iterdir():
            if f"{sub}/{f.name}" not in keep:
                f.unlink()
                removed += 1
    return removed


def find_pdfs(pdf_dir: Path) -> list[Path]:
    if not pdf_dir.exists():
        raise InputFolderError(f"{pdf_dir}: no such folder; expected a folder of PDF reports")
    if not pdf_dir.is_dir():
        raise InputFolderError(f"{pdf_dir}: is a file; expected a folder of PDF reports")
    return sorted(p.resolve() for p in pdf_dir.rglob("*") if p.is_file() and p.suffix.lower() == ".pdf")


_WORKER: dict = {}
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive the run (an OOM kill or kill -9 of the parent alone would leave it blocked on a
    pipe read, holding memory): on Linux the kernel sends SIGKILL when the parent dies (prctl
    PR_SET_PDEATHSIG); everywhere a watchdog thread exits when the parent pid changes."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _init_worker(vocab_labels: dict, secret: bytes, limits: Limits, out_dir: str, parent: int) -> None:
    from clearmamba.engine.analyze import Vocabulary

    _die_with_parent(parent)
    _WORKER.update(vocab=Vocabulary(vocab_labels), secret=secret, limits=limits, out=out_dir)


def _work(path: str):
    from clearmamba.engine.process import SourceOutcome, process_report

    if os.environ.get(WORKER_CRASH_ENV) and Path(path).name == os.environ[WORKER_CRASH_ENV]:
        os._exit(139)  # as a segfault in a native library would
    try:
        return process_report(path, _WORKER["out"], _WORKER["vocab"], _WORKER["secret"], _WORKER["limits"])
    except Exception as err:  # a bug or an unforeseen file must not stop the run; the parent logs it privately
        outcome = SourceOutcome(path)
        outcome.error_kind = "crash"
        outcome.error = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}"
        return outcome


class _Failed:
    def __init__(self, path: str, kind: str, detail: str):
        self.path, self.error_kind, self.error = path, kind, detail


def _pool_run(paths: list[str], workers: int, initargs: tuple, commit, crashed, advance) -> None:
    """Process ``paths`` over a pool. A report that kills its worker (a segfault in a native library) breaks
    the pool: the reports that may have been running are then retried one at a time in a fresh process, the
    one that kills it again is recorded as failed, and the rest go on."""
    remaining = list(paths)
    while remaining:
        finished: set[str] = set()
        try:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=initargs) as pool:
                futures = {pool.submit(_work, p): p for p in remaining}
                for fut in as_completed(futures):
                    commit(fut.result())
                    finished.add(futures[fut])
                    advance()
            return
        except BrokenProcessPool:
            remaining = [p for p in remaining if p not in finished]
            suspects, remaining = remaining[: workers + 1], remaining[workers + 1 :]
            for path in suspects:  # running or queued when the pool broke
                try:
                    with ProcessPoolExecutor(1, initializer=_init_worker, initargs=initargs) as solo:
                        commit(solo.submit(_work, path).result())
                except BrokenProcessPool:
                    crashed(path)
                advance()


def _log_error(out_dir: Path, source_id: str, outcome) -> None:
    line = json.dumps(
        {
            "time": time.time(),
            "source_id": source_id,
            "path": outcome.path,
            "kind": outcome.error_kind,
            "error": outcome.error,
        }
    )
    log = out_dir / "private" / "errors.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as fh:
        fh.write(line + "\n")


def run(
    pdf_dir: str | Path,
    out_dir: str | Path,
    workers: int = 1,
    vocabulary: str | Path | None = None,
    limits: Limits = DEFAULT_LIMITS,
    progress: bool = True,
) -> dict:
    """Process every pending PDF under ``pdf_dir`` into ``out_dir``; returns the state counts."""
    from clearmamba.engine.analyze import load_vocabulary

    pdf_dir, out_dir = Path(pdf_dir), Path(out_dir)
    vocab = load_vocabulary(vocabulary)
    state, secret = prepare_out(out_dir)
    try:
        state.set_meta("vocabulary", json.dumps(vocab.labels, ensure_ascii=False))
        remove_orphans(state, out_dir)
        state.register(find_pdfs(pdf_dir))
        todo = state.pending()
        by_path = {path: sid for sid, path in todo}
        crash_at = int(os.environ.get(CRASH_ENV, "0"))
        committed = 0

        def commit(outcome) -> None:
            nonlocal committed
            sid = by_path[outcome.path]
            if outcome.error_kind:
                _log_error(out_dir, sid, outcome)
                state.record_failure(sid, outcome.error_kind, outcome.error or "")
                return
            if crash_at and committed + 1 == crash_at:
                os.kill(os.getpid(), signal.SIGKILL)  # images are on disk, the commit never happens
            if not state.commit_report(sid, outcome):
                for report in outcome.reports:  # a duplicate: its images were never committed
                    for frame in report.frames:
                        (out_dir / frame.file).unlink(missing_ok=True)
            committed += 1

        def worker_crashed(path: str) -> None:
            sid = by_path[path]
            detail = "the worker process died on this report (crash in a PDF or image library)"
            _log_error(out_dir, sid, _Failed(path, "worker_crash", detail))
            state.record_failure(sid, "worker_crash", detail)

        initargs = (vocab.labels, secret, limits, str(out_dir), os.getpid())
        with _progress(progress, len(todo)) as advance:
            _pool_run([p for _, p in todo], max(1, workers), initargs, commit, worker_crashed, advance)
        remove_orphans(state, out_dir)  # results lost when a pool broke were redone under new names
        state.export(out_dir)
        return state.counts()
    finally:
        state.close()


class _progress:
    """A rich progress bar (reports done / total) that shows no report names."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        self._bar.__enter__()
        task = self._bar.add_task("reports", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc):
        if self.enabled:
            self._bar.__exit__(*exc)


def status(out_dir: str | Path) -> dict:
    path = state_path(out_dir)
    if not path.exists():
        raise NoStateError(f"--out {out_dir}: no engine state here ({path} is missing); run "
                           "'clearmamba engine run PDF_FOLDER --out ...' first")
    state = State(path)
    try:
        return state.counts()
    finally:
        state.close()


def canonical_state(out_dir: str | Path, pdf_root: str | Path) -> dict:
    """Everything a run produced with the random names taken out (ids, pseudonyms), for comparing two runs:
    outputs keyed by source file, page and position, with their fields and image hashes; the reports of each
    source; which reports share a patient; review items; failures."""
    out_dir, pdf_root = Path(out_dir), Path(pdf_root).resolve()
    state = State(state_path(out_dir))
    try:
        db = state.db
        rel = {
            r["id"]: str(Path(r["path"]).relative_to(pdf_root))
            for r in db.execute("SELECT id, path FROM sources")
        }
        outputs, keys = [], {}
        for r in db.execute("SELECT * FROM outputs"):
            key = (rel[r["source_id"]], r["page"], r["rect"])
            keys[r["id"]] = key
            outputs.append(
                (
                    *key,
                    r["eye"],
                    r["modality"],
                    r["frame_time"],
                    r["label"],
                    r["status"],
                    r["sha256"],
                    r["file"].split("/")[0],
                    r["seq"],
                )
            )
        exams: dict[str, list] = {}
        for r in db.execute("SELECT id, exam_id FROM outputs"):
            exams.setdefault(r["exam_id"], []).append(keys[r["id"]])
        patients: dict[str, list] = {}
        reports = []
        for r in db.execute("SELECT * FROM reports"):
            patients.setdefault(r["patient"], []).append((rel[r["source_id"]], r["idx"]))
            reports.append((rel[r["source_id"]], r["idx"], r["pages"], r["exam_date"], r["label"], r["diagnosis"]))
        items = [
            (
                rel[r["source_id"]],
                r["reason"],
                tuple(sorted(keys[o] for o in json.loads(r["output_ids"]))),
                r["status"],
            )
            for r in db.execute("SELECT * FROM review_items")
        ]
        failed = [(rel[r["id"]], r["status"], r["error_kind"]) for r in db.execute("SELECT * FROM sources")]
        files = sorted(
            f"{p.parent.name}/{p.name}" for sub in ("images", "quarantine") for p in (out_dir / sub).iterdir()
        )
        return {
            "outputs": sorted(outputs),
            "exams": sorted(sorted(v) for v in exams.values()),
            "patients": sorted(sorted(v) for v in patients.values()),
            "reports": sorted(reports),
            "review_items": sorted(items),
            "sources": sorted(failed),
            "n_files": len(files),
            "n_outputs": len(outputs),
            "manifest_rows": len(state.manifest_rows()),
        }
    finally:
        state.close()
