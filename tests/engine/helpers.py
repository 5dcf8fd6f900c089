"""Helpers shared by the engine tests."""

from __future__ import annotations

from pathlib import Path


def rect_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_truth(frames, truth_frames, min_iou: float = 0.5):
    """Pairs (output frame, true frame) on the same page whose rectangles overlap most."""
    pairs = []
    for fr in frames:
        cands = [t for t in truth_frames if t.page == fr.page]
        best = max(cands, key=lambda t: rect_iou(fr.rect, t.bbox), default=None)
        if best is not None and rect_iou(fr.rect, best.bbox) >= min_iou:
            pairs.append((fr, best))
    return pairs


def ocr_text(path: Path) -> str:
    import cv2

    from clearmamba.engine.ocr import get_ocr

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return " ".join(b.text for b in get_ocr()(img))
