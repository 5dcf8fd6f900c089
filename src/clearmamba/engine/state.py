"""Run state in one SQLite file (WAL): sources, outputs, exams, pseudonyms, review items and decisions.
A report is committed in a single transaction, so a run killed at any point leaves either all of a report or
none of it; files written for an uncommitted report are orphans that the next run deletes."""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from clearmamba.atomic import atomic_write_bytes
from clearmamba.engine.errors import OutFolderError
from clearmamba.engine.match import frame_order_key


def state_path(out_dir: str | Path) -> Path:
    """Where a run's state lives inside its output folder."""
    return Path(out_dir) / "private" / "state.sqlite"


def peek_sources(out_dir: str | Path) -> dict[str, int] | None:
    """Sources per status of a run another process may be writing, read-only (it never takes the run's write
    lock): ``{}`` before the state file exists, ``None`` while it is busy."""
    db = state_path(out_dir)
    if not db.exists():
        return {}
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)) as con:
            return dict(con.execute("SELECT status, COUNT(*) FROM sources GROUP BY status").fetchall())
    except sqlite3.OperationalError:
        return None


SCHEMA_VERSION = "2"  # 2: one PDF may hold several reports (table reports)
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources(
    id TEXT PRIMARY KEY, path TEXT UNIQUE NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
    sha256 TEXT, error_kind TEXT, error TEXT, stats TEXT, updated REAL);
CREATE TABLE IF NOT EXISTS reports(
    id TEXT PRIMARY KEY, source_id TEXT NOT NULL, idx INTEGER NOT NULL, pages TEXT, exam_date TEXT,
    patient TEXT, label TEXT, diagnosis TEXT);
CREATE TABLE IF NOT EXISTS patients(key TEXT PRIMARY KEY, pseudonym TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS exams(id TEXT PRIMARY KEY, report_id TEXT NOT NULL, eye TEXT, modality TEXT);
CREATE TABLE IF NOT EXISTS outputs(
    id TEXT PRIMARY KEY, source_id TEXT NOT NULL, report_id TEXT NOT NULL, exam_id TEXT NOT NULL,
    file TEXT UNIQUE NOT NULL, page INTEGER, rect TEXT, eye TEXT, eye_source TEXT, disc_agrees INTEGER,
    modality TEXT, frame_time REAL, label TEXT, status TEXT NOT NULL, sha256 TEXT, seq INTEGER);
CREATE TABLE IF NOT EXISTS review_items(
    id INTEGER PRIMARY KEY AUTOINCREMENT, source_id TEXT NOT NULL, report_id TEXT NOT NULL,
    output_ids TEXT NOT NULL, reason TEXT NOT NULL, fields TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'open',
    created REAL);
CREATE TABLE IF NOT EXISTS decisions(
    id INTEGER PRIMARY KEY AUTOINCREMENT, item_id INTEGER NOT NULL, action TEXT NOT NULL, fields TEXT,
    decided REAL);
"""
MANIFEST_COLUMNS = ["path", "exam_id", "patient_id", "eye", "modality", "frame_time", "label"]
EYES, MODALITIES = ("OD", "OS"), ("FFA", "ICGA")


def write_private(path: Path, data: bytes) -> None:
    """Atomic write of a file only the owner can read (0600)."""
    atomic_write_bytes(path, data, mode=0o600)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _new_id() -> str:
    return secrets.token_hex(8)


class State:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        new = not self.path.exists()
        if new:  # create it 0600 before SQLite does, with the process umask
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "sources" in tables and ("meta" not in tables or self.get_meta("schema") != SCHEMA_VERSION):
            self.db.close()
            raise OutFolderError(f"{self.path}: engine state written by an older clearmamba (expected schema "
                                 f"{SCHEMA_VERSION}); run into a new --out folder")
        self.db.executescript(SCHEMA)
        self.set_meta("schema", SCHEMA_VERSION)

    def close(self) -> None:
        self.db.close()

    # ---- meta
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # ---- sources
    def register(self, paths: list[Path]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            for p in paths:
                self.db.execute("INSERT OR IGNORE INTO sources(id, path) VALUES (?, ?)", (_new_id(), str(p)))

    def pending(self) -> list[tuple[str, str]]:
        rows = self.db.execute("SELECT id, path FROM sources WHERE status='pending' ORDER BY path").fetchall()
        return [(r["id"], r["path"]) for r in rows]

    def referenced_files(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT file FROM outputs")}

    def record_failure(self, source_id: str, kind: str, error: str) -> None:
        self.db.execute(
            "UPDATE sources SET status='failed', error_kind=?, error=?, updated=?"
            " WHERE id=? AND status='pending'",
            (kind, error, time.time(), source_id),
        )

    def _pseudonym(self, key: str) -> str:
        row = self.db.execute("SELECT pseudonym FROM patients WHERE key=?", (key,)).fetchone()
        if row:
            return row[0]
        pseudonym = "P" + secrets.token_hex(6)
        self.db.execute("INSERT INTO patients(key, pseudonym) VALUES (?, ?)", (key, pseudonym))
        return pseudonym

    def commit_report(self, source_id: str, outcome) -> bool:
        """All of one PDF's rows (its reports, frames and review items) in one transaction; False (no rows) if it
        was done already or is a byte-identical copy of a finished PDF."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT status FROM sources WHERE id=?", (source_id,)).fetchone()
            if row is None or row[0] != "pending":
                return False
            same = self.db.execute(
                "SELECT id FROM sources WHERE sha256=? AND status='done'", (outcome.sha256,)
            ).fetchone()
            if same:  # archives hold copies of one export: keep the first, never duplicate its frames
                self.db.execute(
                    "UPDATE sources SET status='duplicate', sha256=?, error_kind='duplicate', error=?,"
                    " updated=? WHERE id=?",
                    (outcome.sha256, f"same bytes as source {same[0]}", time.time(), source_id),
                )
                return False
            for report in outcome.reports:
                self._insert_report(source_id, report)
            self.db.execute(
                "UPDATE sources SET status='done', sha256=?, stats=?, updated=? WHERE id=?",
                (outcome.sha256, json.dumps(outcome.stats, sort_keys=True), time.time(), source_id),
            )
        return True

    def _insert_report(self, source_id: str, report) -> None:
        rid = _new_id()
        patient = self._pseudonym(report.patient_key or f"anonymous:{source_id}:{report.index}")
        self.db.execute(
            "INSERT INTO reports(id, source_id, idx, pages, exam_date, patient, label, diagnosis)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (rid, source_id, report.index, json.dumps(report.pages), report.exam_date, patient, report.label,
             report.diagnosis),
        )
        ids = []
        for frame in report.frames:
            oid = _new_id()
            ids.append(oid)
            status = "review" if frame.reasons or report.reasons else "ok"
            self.db.execute(
                "INSERT INTO outputs(id, source_id, report_id, exam_id, file, page, rect, eye, eye_source,"
                " disc_agrees, modality, frame_time, label, status, sha256) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (oid, source_id, rid, "", frame.file, frame.page, json.dumps([round(v, 2) for v in frame.rect]),
                 frame.eye, frame.eye_source, None if frame.disc_agrees is None else int(frame.disc_agrees),
                 frame.modality, frame.frame_time, report.label, status, frame.sha256),
            )
            if frame.reasons:
                fields = {"eye": frame.eye, "modality": frame.modality, "frame_time": frame.frame_time,
                          "label": report.label, "eye_source": frame.eye_source}
                self._add_item(source_id, rid, [oid], ", ".join(frame.reasons), fields)
        for reason in report.reasons:
            self._add_item(source_id, rid, ids, reason, {"label": report.label, "diagnosis": report.diagnosis})
        self._regroup(rid)

    def _add_item(self, source_id: str, report_id: str, output_ids: list[str], reason: str, fields: dict) -> None:
        self.db.execute(
            "INSERT INTO review_items(source_id, report_id, output_ids, reason, fields, created)"
            " VALUES (?,?,?,?,?,?)",
            (source_id, report_id, json.dumps(output_ids), reason, json.dumps(fields, ensure_ascii=False),
             time.time()),
        )

    def _regroup(self, report_id: str) -> None:
        """Exams = frames of one report with the same eye and modality, numbered in time order (ties by page
        and position on it, never by a random id)."""
        rows = self.db.execute(
            "SELECT id, eye, modality, frame_time, page, rect FROM outputs WHERE report_id=?", (report_id,)
        ).fetchall()
        rows.sort(key=lambda r: frame_order_key(r["frame_time"], r["page"], json.loads(r["rect"])))
        exams = {
            (r["eye"], r["modality"]): r["id"]
            for r in self.db.execute("SELECT id, eye, modality FROM exams WHERE report_id=?", (report_id,))
        }
        seq: dict[tuple, int] = {}
        for r in rows:
            key = (r["eye"], r["modality"])
            if key not in exams:
                exams[key] = _new_id()
                self.db.execute(
                    "INSERT INTO exams(id, report_id, eye, modality) VALUES (?,?,?,?)", (exams[key], report_id, *key)
                )
            seq[key] = seq.get(key, -1) + 1
            self.db.execute("UPDATE outputs SET exam_id=?, seq=? WHERE id=?", (exams[key], seq[key], r["id"]))

    # ---- review
    def items(self, status: str | None = "open") -> list[sqlite3.Row]:
        if status is None:
            return self.db.execute("SELECT * FROM review_items ORDER BY id").fetchall()
        return self.db.execute("SELECT * FROM review_items WHERE status=? ORDER BY id", (status,)).fetchall()

    def item(self, item_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM review_items WHERE id=?", (item_id,)).fetchone()

    def outputs(self, ids: list[str]) -> list[sqlite3.Row]:
        q = f"SELECT * FROM outputs WHERE id IN ({','.join('?' * len(ids))}) ORDER BY seq"
        return self.db.execute(q, ids).fetchall() if ids else []

    def decide(self, item_id: int, action: str, fields: dict, out_dir: Path) -> None:
        """Record a reviewer's decision and apply it: 'accept' keeps the proposed fields (they must be
        complete), 'correct' sets new ones, 'reject' drops the covered images from the dataset."""
        item = self.item(item_id)
        if item is None:
            raise KeyError(f"review item {item_id} does not exist")
        if item["status"] != "open":
            raise ValueError(f"review item {item_id} is already {item['status']}")
        output_ids = json.loads(item["output_ids"])
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if action in ("accept", "correct"):
                updates = []
                for out in self.outputs(output_ids):
                    if out["status"] == "rejected":
                        continue  # another decision already dropped this image
                    new = {
                        k: fields.get(k, out[k]) if action == "correct" else out[k]
                        for k in ("eye", "modality", "frame_time", "label")
                    }
                    missing = [k for k in ("eye", "modality", "label") if new[k] in (None, "")]
                    if missing:
                        raise ValueError(f"cannot {action} item {item_id}: {', '.join(missing)} unknown")
                    updates.append((out, new))
                for out, new in updates:  # all validated before anything (files included) changes
                    self.db.execute(
                        "UPDATE outputs SET eye=?, modality=?, frame_time=?, label=? WHERE id=?",
                        (new["eye"], new["modality"], new["frame_time"], new["label"], out["id"]),
                    )
                    # released only by a decision on its own PHI item: the reviewer looked at it for PHI
                    if out["file"].startswith("quarantine/") and "phi_after_erasure" in item["reason"]:
                        released = "images/" + out["file"].split("/", 1)[1]
                        os.replace(out_dir / out["file"], out_dir / released)
                        self.db.execute("UPDATE outputs SET file=? WHERE id=?", (released, out["id"]))
            elif action == "reject":
                for out in self.outputs(output_ids):  # a rejected image leaves images/ (renamed, atomic)
                    if out["file"].startswith("images/"):
                        held = "quarantine/" + out["file"].split("/", 1)[1]
                        os.replace(out_dir / out["file"], out_dir / held)
                        self.db.execute("UPDATE outputs SET file=? WHERE id=?", (held, out["id"]))
            else:
                raise ValueError(f"unknown action {action!r}; expected accept, correct or reject")
            status = {"accept": "accepted", "correct": "corrected", "reject": "rejected"}[action]
            self.db.execute("UPDATE review_items SET status=? WHERE id=?", (status, item_id))
            self.db.execute(
                "INSERT INTO decisions(item_id, action, fields, decided) VALUES (?,?,?,?)",
                (item_id, action, json.dumps(fields, ensure_ascii=False), time.time()),
            )
            for oid in output_ids:
                self._refresh_status(oid)
            self._regroup(item["report_id"])

    def _refresh_status(self, output_id: str) -> None:
        statuses = [
            r[0]
            for r in self.db.execute(
                "SELECT status FROM review_items WHERE output_ids LIKE ?", (f'%"{output_id}"%',)
            )
        ]
        status = "rejected" if "rejected" in statuses else "review" if "open" in statuses else "ok"
        self.db.execute("UPDATE outputs SET status=? WHERE id=?", (status, output_id))

    # ---- exports
    def manifest_rows(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT o.file, o.exam_id, r.patient, o.eye, o.modality, o.frame_time, o.label FROM outputs o"
            " JOIN reports r ON r.id=o.report_id WHERE o.status='ok' AND o.label IS NOT NULL AND o.file LIKE 'images/%'"
            " ORDER BY r.patient, o.exam_id, o.seq"
        ).fetchall()
        return [dict(zip(MANIFEST_COLUMNS, r)) for r in rows if r[3] in EYES and r[4] in MODALITIES]

    def export(self, out_dir: Path) -> int:
        """manifest.csv (what the training loaders read) and private/id_map.csv (0600)."""
        rows = self.manifest_rows()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "frame_time": "" if r["frame_time"] is None else f"{r['frame_time']:g}"})
        write_atomic(out_dir / "manifest.csv", buf.getvalue().encode())
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(
            ["output_id", "file", "status", "exam_id", "patient_id", "source_path", "page", "rect"]
        )
        for r in self.db.execute(
            "SELECT o.id, o.file, o.status, o.exam_id, r.patient, s.path, o.page, o.rect FROM outputs o"
            " JOIN sources s ON s.id=o.source_id JOIN reports r ON r.id=o.report_id ORDER BY s.path, o.page, o.rect"
        ):
            writer.writerow(list(r))
        write_private(out_dir / "private" / "id_map.csv", buf.getvalue().encode())
        return len(rows)

    def counts(self) -> dict:
        q = self.db.execute
        return {
            "sources": dict(q("SELECT status, COUNT(*) FROM sources GROUP BY status").fetchall()),
            "outputs": dict(q("SELECT status, COUNT(*) FROM outputs GROUP BY status").fetchall()),
            "review_open": dict(
                q("SELECT reason, COUNT(*) FROM review_items WHERE status='open' GROUP BY reason").fetchall()
            ),
            "failed": dict(
                q(
                    "SELECT error_kind, COUNT(*) FROM sources WHERE status='failed' GROUP BY error_kind"
                ).fetchall()
            ),
        }
