"""One report, start to finish, in a worker process: extract -> analyze -> de-identify -> match. Writes the
de-identified images (random names, atomically) and returns everything else for the parent to commit in one
transaction. Nothing here logs text from the report."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clearmamba.engine.analyze import Vocabulary, analyze_text, parse_eye
from clearmamba.engine.deidentify import PhiScrubber, deidentify_image, fov_mask, text_boxes
from clearmamba.engine.extract import DEFAULT_LIMITS, BadPdfError, Limits, PageImage, TextLine, extract
from clearmamba.engine.match import boxes_near, disc_side_eye, panel_fields, split_panels

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


@dataclass
class ReportOutcome:
    path: str
    sha256: str | None = None
    error_kind: str | None = None
    error: str | None = None
    exam_date: str | None = None
    patient_key: str | None = None  # HMAC of the real patient ID; the ID itself never leaves the worker
    label: str | None = None
    diagnosis: str | None = None  # scrubbed
    reasons: list[str] = field(default_factory=list)  # report-level review reasons
    frames: list[FrameOut] = field(default_factory=list)


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


def _panel_rect(img: PageImage, box) -> tuple[float, float, float, float]:
    h, w = img.pixels.shape
    rx0, ry0, rx1, ry1 = img.rect
    sx, sy = (rx1 - rx0) / w, (ry1 - ry0) / h
    x0, y0, x1, y1 = box
    return (rx0 + x0 * sx, ry1 - y1 * sy, rx0 + x1 * sx, ry1 - y0 * sy)


def _inside(line: TextLine, rect) -> bool:
    cx, cy = (line.rect[0] + line.rect[2]) / 2, (line.rect[1] + line.rect[3]) / 2
    return rect[0] <= cx <= rect[2] and rect[1] <= cy <= rect[3]


def _captions(lines: list[TextLine], img: PageImage, prect) -> list[tuple[str, float]]:
    """Text-layer lines printed just below the image, under this panel's columns."""
    out = []
    for ln in lines:
        if ln.page != img.page or _inside(ln, img.rect):
            continue
        cx = (ln.rect[0] + ln.rect[2]) / 2
        if prect[0] - 5 <= cx <= prect[2] + 5 and img.rect[1] - 30 <= ln.rect[3] <= img.rect[1] + 2:
            out.append((ln.text, ln.score))
    return out


def _page_eye(lines: list[TextLine], images: list[PageImage], page: int) -> str | None:
    eyes = {
        parse_eye(ln.text)
        for ln in lines
        if ln.page == page and not any(_inside(ln, im.rect) for im in images if im.page == page)
    }
    eyes = {e for e in eyes if e in ("OD", "OS")}
    return eyes.pop() if len(eyes) == 1 else None


def process_report(
    path: str | Path,
    out_dir: str | Path,
    vocabulary: Vocabulary,
    secret: bytes,
    limits: Limits = DEFAULT_LIMITS,
    ocr=None,
) -> ReportOutcome:
    if ocr is None:
        from clearmamba.engine.ocr import get_ocr

        ocr = get_ocr()
    path, out_dir = Path(path), Path(out_dir)
    outcome = ReportOutcome(str(path))
    try:
        ex = extract(path, ocr=ocr, limits=limits)
    except BadPdfError as err:
        outcome.error_kind, outcome.error = err.kind, err.detail
        return outcome
    outcome.sha256 = ex.sha256
    fields = analyze_text([ln.text for ln in ex.lines], vocabulary)
    scrubber = PhiScrubber(list(fields.phi.values()))
    outcome.exam_date = fields.exam_date.isoformat() if fields.exam_date else None
    outcome.patient_key = patient_key(secret, fields.phi["id"]) if fields.phi.get("id") else None
    outcome.label = fields.label
    outcome.diagnosis = scrubber.scrub(fields.diagnosis) if fields.diagnosis else None
    if fields.label_reason:
        outcome.reasons.append(fields.label_reason)
    if ex.scanned_pages:
        key_lines = [ln for ln in ex.lines if fields.diagnosis and fields.diagnosis in ln.text]
        if any(ln.score < MIN_OCR_SCORE for ln in key_lines):
            outcome.reasons.append("low_ocr_confidence")
    context_eye = fields.eye if fields.eye in ("OD", "OS") else None
    for img in ex.images:
        if min(img.pixels.shape) < MIN_IMAGE_SIDE:
            continue
        boxes = ocr(img.pixels)
        clean, leftover = deidentify_image(img.pixels, boxes, scrubber, ocr)
        fov = fov_mask(img.pixels)
        written = text_boxes(boxes, img.pixels.shape)
        page_eye = context_eye or _page_eye(ex.lines, ex.images, img.page)
        for box in split_panels(fov):
            x0, y0, x1, y1 = box
            prect = _panel_rect(img, box)
            texts = [(b.text, b.score) for b in boxes_near(written, box)] + _captions(ex.lines, img, prect)
            disc = disc_side_eye(clean[y0:y1, x0:x1], fov[y0:y1, x0:x1])
            pf = panel_fields(texts, disc, page_eye, fields.modality)
            reasons = []
            if pf.eye is None or pf.eye_conflict:
                reasons.append("ambiguous_eye")
            if pf.modality is None:
                reasons.append("unknown_modality")
            if pf.min_label_score < MIN_OCR_SCORE:
                reasons.append("low_ocr_confidence")
            if leftover:
                reasons.append("phi_after_erasure")
            folder = "quarantine" if leftover else "images"
            name = f"{folder}/{secrets.token_hex(8)}.png"
            sha = write_png_atomic(out_dir / name, clean[y0:y1, x0:x1])
            outcome.frames.append(
                FrameOut(
                    name, img.page, prect, pf.eye, pf.eye_source, pf.modality, pf.frame_time, sha, reasons
                )
            )
    return outcome
