"""Processor (de-identification): PHI in text (known header values plus patterns for dates, phone numbers
and ID-like numbers) is replaced; burned-in text on images is erased: filled black outside the circular fundus
field, inpainted inside it. After erasure the image is read again and any PHI left is reported."""

from __future__ import annotations

import re
import unicodedata

import numpy as np

from clearmamba.engine.ocr import OcrBox

REDACTED = "[REDACTED]"
_PATTERNS = [
    re.compile(r"(?<!\d)(?:19|20)\d{2}\s*[-/.年]\s*\d{1,2}\s*[-/.月]\s*\d{1,2}\s*日?"),  # dates
    re.compile(r"(?<!\d)\d{1,2}[-/.]\d{1,2}[-/.](?:19|20)?\d{2}(?!\d)"),  # 12/05/2023
    re.compile(r"(?<!\d)\+?\d[\d\- ]{7,}\d(?!\d)"),  # phone numbers and long ids with separators
    re.compile(r"(?<![A-Za-z\d])[A-Za-z]{0,3}\d{6,}(?!\d)"),  # ids: 6+ digits, optional letter prefix
    re.compile(r"(?:\bID|病历号|住院号|门诊号|登记号)\s*[:：#]?\s*\S+", re.I),
]


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


class PhiScrubber:
    """Finds and removes PHI: the report's own header values (``known``) and generic patterns."""

    def __init__(self, known: list[str] | tuple[str, ...] = ()):
        self.known = [_squash(k) for k in known if len(_squash(k)) >= 2]
        self._known_res = [
            re.compile(r"\s*".join(re.escape(ch) for ch in k), re.I)
            for k in sorted(self.known, key=len, reverse=True)
        ]

    def hits(self, text: str) -> list[str]:
        """PHI strings present in ``text`` (spacing- and case-insensitive for known values)."""
        found = []
        squashed = _squash(text)
        found += [k for k in self.known if k in squashed]
        norm = unicodedata.normalize("NFKC", text)
        for pattern in _PATTERNS:
            found += [m.group(0) for m in pattern.finditer(norm)]
        return found

    def scrub(self, text: str) -> str:
        out = unicodedata.normalize("NFKC", text)
        for pattern in self._known_res:
            out = pattern.sub(REDACTED, out)
        for pattern in _PATTERNS:
            out = pattern.sub(REDACTED, out)
        return out


def fov_mask(grey: np.ndarray) -> np.ndarray:
    """Bool mask of the fundus field(s): bright regions that survive an opening wider than text strokes,
    filled to their convex hulls."""
    import cv2

    h, w = grey.shape
    k = max(9, min(h, w) // 12) | 1
    bright = (cv2.GaussianBlur(grey, (0, 0), 2) > 10).astype(np.uint8)
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright)
    mask = np.zeros((h, w), np.uint8)
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] >= 0.01 * h * w:
            pts = cv2.findNonZero((labels == i).astype(np.uint8))
            cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1)
    return mask.astype(bool)


def text_boxes(boxes: list[OcrBox], shape: tuple[int, int], max_height_frac: float = 0.2) -> list[OcrBox]:
    """OCR boxes that are plausibly text lines (detectors sometimes outline a whole bright disc as 'O')."""
    h, w = shape
    keep = []
    for b in boxes:
        x0, y0, x1, y1 = b.rect
        if (y1 - y0) <= max_height_frac * h and (x1 - x0) * (y1 - y0) <= 0.15 * h * w and b.text.strip():
            keep.append(b)
    return keep


def erase_text(
    grey: np.ndarray,
    boxes: list[OcrBox],
    fov: np.ndarray | None = None,
    pad: int = 4,
    fill_inside: bool = False,
) -> np.ndarray:
    """Erase every box: black outside the field of view, TELEA inpainting inside (or black with
    ``fill_inside``, the fallback when inpainting left something readable)."""
    import cv2

    fov = fov_mask(grey) if fov is None else fov
    mask = np.zeros(grey.shape, np.uint8)
    for b in boxes:
        cv2.fillPoly(mask, [np.round(np.array(b.quad)).astype(np.int32)], 1)
    if pad:
        mask = cv2.dilate(mask, np.ones((2 * pad + 1, 2 * pad + 1), np.uint8))
    m = mask.astype(bool)
    out = grey.copy()
    out[m & ~fov] = 0
    inside = m & fov
    if inside.any():
        if fill_inside:
            out[inside] = 0
        else:
            out = cv2.inpaint(out, inside.astype(np.uint8), 5, cv2.INPAINT_TELEA)
            out[m & ~fov] = 0
    return out


def deidentify_image(
    grey: np.ndarray, boxes: list[OcrBox], scrubber: PhiScrubber, ocr
) -> tuple[np.ndarray, list[str]]:
    """Erase all burned-in text, read the result again, and black out any box still carrying PHI.
    Returns the clean image and the PHI strings still readable (empty when clean)."""
    fov = fov_mask(grey)
    out = erase_text(grey, text_boxes(boxes, grey.shape), fov)
    for attempt in range(2):
        residual = [b for b in ocr(out) if scrubber.hits(b.text)]
        if not residual:
            return out, []
        out = erase_text(out, residual, fov, pad=6 + 4 * attempt, fill_inside=True)
    leftover = [h for b in ocr(out) for h in scrubber.hits(b.text)]
    return out, leftover
