"""One PDF, start to finish, in a worker process: extract -> split into reports -> analyze -> per image: detect
text, read labels, split panels, erase, check -> match labels to panels. Writes the de-identified images
(random names, atomically) and returns everything else for the parent to commit in one transaction. Nothing
here logs text from the report."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clearmamba.engine.analyze import Vocabulary, analyze_text, parse_eye, segment_reports
from clearmamba.engine.deidentify import DEFAULT_CHECK, CheckConfig, deidentify_panel, fov_mask
from clearmamba.engine.extract import DEFAULT_LIMITS, BadPdfError, Limits, PageImage, TextLine, extract
from clearmamba.engine.match import (
    Label,
    Rect,
    assign_labels,
    disc_side_eye,
    headings,
    is_fundus_panel,
    make_label,
    panel_fields,
    split_panels,
)
from clearmamba.engine.phi import PhiScrubber

MIN_OCR_SCORE = 0.8
MIN_IMAGE_SIDE = 48  # smaller images are logos/icons, not angiograms


@dataclass
class FrameOut:
    file: str  # relative to the output folder
    page: int
    rect: tuple[float, float, float, float]  # panel position on the page, points
    eye: str | None
    eye_source: str
    modality: str | None
    frame_time: float | None
    sha256: str
    reasons: list[str] = field(default_factory=list)
    disc_agrees: bool | None = None


@dataclass
class ReportOutcome:
    """One report (one patient, one exam date) of a PDF."""

    index: int = 0
    pages: list[int] = field(default_factory=list)
    exam_date: str | None = None  # only a labelled exam/visit date; never a birth date
    patient_key: str | None = None  # HMAC of the real patient ID; the ID itself never leaves the worker
    label: str | None = None
    diagnosis: str | None = None  # scrubbed
    reasons: list[str] = field(default_factory=list)  # report-level review reasons
    frames: list[FrameOut] = field(default_factory=list)


@dataclass
class SourceOutcome:
    """Everything one PDF produced: its reports, or the reason it failed."""

    path: str
    sha256: str | None = None
    error_kind: str | None = None
    error: str | None = None
    reports: list[ReportOutcome] = field(default_factory=list)
    stats: dict = field(default_factory=dict)  # fragments rejected, erasure retries, quarantined panels


def write_png_atomic(path: Path, image: np.ndarray) -> str:
    """Write without any metadata chunk (cv2 adds none) via a temporary file and rename; returns sha256."""
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    data = buf.tobytes()
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def patient_key(secret: bytes, patient_id: str) -> str:
    # keyed hash: equal IDs meet in the database without the ID being stored
    return hmac.new(secret, "".join(patient_id.split()).upper().encode(), hashlib.sha256).hexdigest()


def _to_points(img: PageImage, box) -> Rect:
    """A pixel box (x0 y0 x1 y1, y down) of ``img`` on the page, in points (y up)."""
    h, w = img.pixels.shape
    rx0, ry0, rx1, ry1 = img.rect
    sx, sy = (rx1 - rx0) / w, (ry1 - ry0) / h
    x0, y0, x1, y1 = box
    return (rx0 + x0 * sx, ry1 - y1 * sy, rx0 + x1 * sx, ry1 - y0 * sy)


def _inside(line: TextLine, rect) -> bool:
    cx, cy = (line.rect[0] + line.rect[2]) / 2, (line.rect[1] + line.rect[3]) / 2
    return rect[0] <= cx <= rect[2] and rect[1] <= cy <= rect[3]


@dataclass
class _Panel:
    page: int
    rect: Rect
    image_rect: Rect  # the picture it was cut from
    clean: np.ndarray
    disc: tuple[str | None, float]
    leftover: bool


def _image_panels(img: PageImage, ocr, check: CheckConfig, stats: dict) -> tuple[list[_Panel], list[Label]]:
    """Detect and read the image's text (labels), split it into fundus panels, erase every text region."""
    boxes = ocr(img.pixels)  # read before erasure: labels carry the eye and the frame time
    quads = [b.quad for b in boxes]  # every region found, whatever it reads as: all are erased
    labels = [lab for b in boxes if (lab := make_label(b.text, b.score, _to_points(img, b.rect)))]
    fov = fov_mask(img.pixels)
    panels = []
    for x0, y0, x1, y1 in split_panels(fov):
        crop, pfov = img.pixels[y0:y1, x0:x1], fov[y0:y1, x0:x1]
        if not is_fundus_panel(crop, pfov):
            stats["fragments_rejected"] = stats.get("fragments_rejected", 0) + 1
            continue
        local = [tuple((x - x0, y - y0) for x, y in q) for q in quads]
        clean, left = deidentify_panel(crop, pfov, local, ocr, check)
        stats["panels"] = stats.get("panels", 0) + 1
        if left:
            stats["quarantined"] = stats.get("quarantined", 0) + 1
        panels.append(_Panel(img.page, _to_points(img, (x0, y0, x1, y1)), img.rect, clean,
                             disc_side_eye(clean, pfov), bool(left)))
    return panels, labels


def process_report(
    path: str | Path,
    out_dir: str | Path,
    vocabulary: Vocabulary,
    secret: bytes,
    limits: Limits = DEFAULT_LIMITS,
    ocr=None,
    check: CheckConfig = DEFAULT_CHECK,
) -> SourceOutcome:
    if ocr is None:
        from clearmamba.engine.ocr import get_ocr

        ocr = get_ocr()
    path, out_dir = Path(path), Path(out_dir)
    outcome = SourceOutcome(str(path))
    try:
        ex = extract(path, ocr=ocr, limits=limits)
    except BadPdfError as err:
        outcome.error_kind, outcome.error = err.kind, err.detail
        return outcome
    outcome.sha256 = ex.sha256
    page_text = [ln for ln in ex.lines if not any(im.page == ln.page and _inside(ln, im.rect) for im in ex.images)]
    segments = segment_reports({p: [ln.text for ln in page_text if ln.page == p] for p in range(1, ex.n_pages + 1)})
    page_report: dict[int, int] = {}
    fields_of = []
    for index, pages in enumerate(segments):
        page_report.update({p: index for p in pages})
        fields_of.append(analyze_text([ln.text for ln in ex.lines if ln.page in pages], vocabulary))
    # every report's identifiers are PHI for the whole file (a second patient's name may sit on a shared page)
    scrubber = PhiScrubber([v for f in fields_of for v in f.phi])
    for index, (pages, fields) in enumerate(zip(segments, fields_of)):
        rep = ReportOutcome(index, pages, fields.exam_date.isoformat() if fields.exam_date else None,
                            patient_key(secret, fields.header.patient_id) if fields.header.patient_id else None,
                            fields.label, scrubber.scrub(fields.diagnosis) if fields.diagnosis else None)
        if fields.label_reason:
            rep.reasons.append(fields.label_reason)
        if set(pages) & set(ex.scanned_pages) and fields.diagnosis:
            key_lines = [ln for ln in ex.lines if ln.page in pages and fields.diagnosis in ln.text]
            if any(ln.score < MIN_OCR_SCORE for ln in key_lines):
                rep.reasons.append("low_ocr_confidence")
        outcome.reports.append(rep)
    panels: list[_Panel] = []
    labels: dict[int, list[Label]] = {}
    for img in ex.images:
        if min(img.pixels.shape) < MIN_IMAGE_SIDE:
            continue
        found, burned = _image_panels(img, ocr, check, outcome.stats)
        panels += found
        labels.setdefault(img.page, []).extend(burned)
    for page in sorted({p.page for p in panels}):
        index = page_report.get(page, 0)
        _match_page(page, [p for p in panels if p.page == page], labels.get(page, []),
                    [ln for ln in page_text if ln.page == page], fields_of[index], outcome.reports[index], out_dir)
    return outcome


def _match_page(page: int, panels: list[_Panel], labels: list[Label], lines: list[TextLine], fields,
                rep: ReportOutcome, out_dir: Path) -> None:
    heads = set(headings([(ln.text, ln.rect) for ln in lines], [p.rect for p in panels]))
    labels = labels + [lab for ln in lines if ln.text not in heads and (lab := make_label(ln.text, ln.score, ln.rect))]
    near = assign_labels(labels, [p.rect for p in panels], [p.image_rect for p in panels])
    printed = {lab.eye for n in near for _, lab in n if lab.eye}
    named = {e for e in (parse_eye(h) for h in heads) if e in ("OD", "OS")}
    # the page's eye (the report's "Eye:" field, a heading such as "OD late phase") is context only when it
    # names one eye and no label on the page names the other
    context = fields.eye if fields.eye in ("OD", "OS") else (named.pop() if len(named) == 1 else None)
    if context and printed - {context}:
        context = None
    for panel, nearby in zip(panels, near):
        pf = panel_fields(nearby, panel.disc, context, fields.modality)
        reasons = []
        if pf.eye_review:
            reasons.append("ambiguous_eye")
        if pf.modality is None:
            reasons.append("unknown_modality")
        if pf.min_label_score < MIN_OCR_SCORE:
            reasons.append("low_ocr_confidence")
        if panel.leftover:
            reasons.append("phi_after_erasure")
        name = f"{'quarantine' if panel.leftover else 'images'}/{secrets.token_hex(8)}.png"
        sha = write_png_atomic(out_dir / name, panel.clean)
        rep.frames.append(FrameOut(name, page, panel.rect, pf.eye, pf.eye_source, pf.modality, pf.frame_time,
                                   sha, reasons, pf.disc_agrees))
