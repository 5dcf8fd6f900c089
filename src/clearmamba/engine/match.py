"""Matcher: split composites (two eyes side by side, or a grid of frames) into single panels, assign OD/OS
from the layout labels and check it against the optic-disc position, read each panel's frame time, and group
frames into exams ordered by time."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from clearmamba.engine.analyze import parse_eye, parse_frame_time, parse_modality
from clearmamba.engine.ocr import OcrBox

PixelBox = tuple[int, int, int, int]  # x0 y0 x1 y1, pixels, y down


def split_panels(fov: np.ndarray, min_frac: float = 0.04) -> list[PixelBox]:
    """Bounding boxes of the separate fields of view, row by row then left to right; the whole image when the
    field is not separable (one panel)."""
    import cv2

    h, w = fov.shape
    n, _, stats, _ = cv2.connectedComponentsWithStats(fov.astype(np.uint8))
    boxes = [
        (int(x), int(y), int(x + bw), int(y + bh))
        for x, y, bw, bh, area in stats[1:]
        if area >= min_frac * h * w
    ]
    if not boxes:
        return [(0, 0, w, h)]
    row_h = max(b[3] - b[1] for b in boxes) / 2
    return sorted(boxes, key=lambda b: (round(b[1] / row_h), b[0]))


def disc_side_eye(panel: np.ndarray, fov: np.ndarray | None = None) -> str | None:
    """OD when the brightest large blob (the optic disc) lies right of centre, OS when left, None when central
    or unclear. Convention: images displayed as seen by the examiner, nasal disc on the image-right for OD."""
    import cv2

    h, w = panel.shape
    blurred = cv2.GaussianBlur(panel.astype(np.float32), (0, 0), max(2.0, w / 30))
    if fov is not None:
        blurred[~fov] = 0
        xs = np.nonzero(fov.any(axis=0))[0]
        cx, half = ((xs[0] + xs[-1]) / 2, (xs[-1] - xs[0]) / 2) if len(xs) else (w / 2, w / 2)
    else:
        cx, half = w / 2, w / 2
    inside = blurred[blurred > 0]
    if inside.size == 0:
        return None
    _, peak, _, (x, _) = cv2.minMaxLoc(blurred)
    if peak < 1.3 * float(np.median(inside)):  # no blob clearly brighter than the background
        return None
    offset = (x - cx) / max(half, 1)
    return "OD" if offset > 0.2 else "OS" if offset < -0.2 else None


def boxes_near(boxes: list[OcrBox], panel: PixelBox, reach: float = 0.3) -> list[OcrBox]:
    """OCR boxes whose centre lies within the panel's columns and inside or just above/below it."""
    x0, y0, x1, y1 = panel
    margin = reach * (y1 - y0)
    return [b for b in boxes if x0 <= b.center[0] <= x1 and y0 - margin <= b.center[1] <= y1 + margin]


@dataclass
class PanelFields:
    eye: str | None
    eye_source: str  # label | disc | label+disc | context | none
    eye_conflict: bool
    modality: str | None
    frame_time: float | None
    min_label_score: float


def panel_fields(
    texts: list[tuple[str, float]],
    disc_eye: str | None,
    context_eye: str | None,
    context_modality: str | None,
) -> PanelFields:
    """Combine what is written near a panel (texts with OCR scores) with the disc position and the report/page
    context. A label that disagrees with the disc is a conflict (review), never silently overruled."""
    eyes = {e for e in (parse_eye(t) for t, _ in texts) if e in ("OD", "OS")}
    label_eye = eyes.pop() if len(eyes) == 1 else None
    conflict = len(eyes) > 0  # more than one eye written next to one panel
    mods = {m for m in (parse_modality(t) for t, _ in texts) if m}
    modality = mods.pop() if len(mods) == 1 else context_modality
    if modality == "FFA+ICGA":
        modality = None
    # a time written together with an eye or modality tag ("OS FA 0:19") beats a bare one (a clock time)
    tagged = sorted(texts, key=lambda ts: not (parse_eye(ts[0]) or parse_modality(ts[0])))
    times = [t for t in (parse_frame_time(t) for t, _ in tagged) if t is not None]
    frame_time = times[0] if times else None
    scores = [s for t, s in texts if parse_eye(t) or parse_frame_time(t) is not None]
    written = label_eye or (context_eye if context_eye in ("OD", "OS") else None)
    if written and disc_eye and written != disc_eye:
        conflict = True
    if written:
        source = ("label" if label_eye else "context") + ("+disc" if disc_eye == written else "")
        eye = written
    else:
        eye, source = disc_eye, "disc" if disc_eye else "none"
    return PanelFields(eye, source, conflict, modality, frame_time, min(scores) if scores else 1.0)


def group_exams(frames: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Frames of one report grouped by (eye, modality), each group ordered by frame time (unknown last)."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for frame in frames:
        groups[(frame["eye"] or "?", frame["modality"] or "?")].append(frame)
    for group in groups.values():
        group.sort(key=lambda f: (f["frame_time"] is None, f["frame_time"] or 0.0, f["page"]))
    return dict(groups)
