"""Burned-in text removal, by construction rather than by reading: everything outside the fundus field of view is
set to black, every text region the detector finds inside it is inpainted, and the result is checked again by
detection plus recognition at four rotations (and extra scales). Any text that remains after a second,
harder erasure means erasure failed: the caller quarantines the image, whatever the text says."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clearmamba.engine.ocr import OcrBox, Quad, meaningful


def fov_mask(grey: np.ndarray) -> np.ndarray:
    """Bool mask of the fundus field(s): regions brighter than the background (a threshold set from the image,
    so JPEG noise on a black border stays background) that survive an opening wider than text strokes, filled
    to their convex hulls."""
    import cv2

    h, w = grey.shape
    blurred = cv2.GaussianBlur(grey, (0, 0), max(2.0, min(h, w) / 120))
    otsu, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    level = float(np.clip(0.5 * otsu, 10, 25))  # between a noisy black border (<10) and an early frame (>30)
    bright = (blurred > level).astype(np.uint8)
    k = max(9, min(h, w) // 12) | 1
    bright = cv2.morphologyEx(bright, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bright)
    mask = np.zeros((h, w), np.uint8)
    for i in range(1, n):
        if stats[i, cv2.CC_STAT_AREA] >= 0.01 * h * w:
            pts = cv2.findNonZero((labels == i).astype(np.uint8))
            cv2.fillConvexPoly(mask, cv2.convexHull(pts), 1)
    return mask.astype(bool)


def quad_mask(shape: tuple[int, int], quads: list[Quad], pad: int) -> np.ndarray:
    import cv2

    mask = np.zeros(shape, np.uint8)
    for q in quads:
        cv2.fillPoly(mask, [np.round(np.array(q)).astype(np.int32)], 1)
    if pad:
        mask = cv2.dilate(mask, np.ones((2 * pad + 1, 2 * pad + 1), np.uint8))
    return mask.astype(bool)


def erase_regions(grey: np.ndarray, quads: list[Quad], fov: np.ndarray, pad: int = 4,
                  fill_inside: bool = False) -> np.ndarray:
    """Black outside the field of view; every region inpainted (TELEA) inside it, or filled black with
    ``fill_inside`` (the harder second attempt)."""
    import cv2

    out = grey.copy()
    out[~fov] = 0
    m = quad_mask(grey.shape, quads, pad) & fov
    if m.any():
        if fill_inside:
            out[m] = 0
        else:
            out = cv2.inpaint(out, m.astype(np.uint8), 5, cv2.INPAINT_TELEA)
            out[~fov] = 0
    return out


@dataclass(frozen=True)
class CheckConfig:
    """How hard the check after erasure looks. Detection runs at each of ``scales`` (and on the image turned by
    each of ``rotations``); every region found is read at 0/90/180/270 degrees."""

    scales: tuple[float, ...] = (1.0,)  # the detector finds text down to ~6 px at native size
    rotations: tuple[int, ...] = (0,)  # it also finds vertical text upright; 90 adds a second look
    min_score: float = 0.5
    max_side: int = 640  # an upscaled copy stops growing here (detection time grows with the pixel count)
    # check even when nothing was erased inside the field (its pixels are then exactly what the first
    # detection, at the same scale, already found clean)
    always: bool = False


DEFAULT_CHECK = CheckConfig()


def _unrotate(q: Quad, k: int, shape: tuple[int, int]) -> Quad:
    """Map a quad found on ``np.rot90(img, k)`` back to ``img`` coordinates (k = 0 or 1)."""
    if k == 0:
        return q
    w = shape[1]  # rot90 by +1: (x, y) in the rotated image is (y, w - 1 - x) back in the original
    return tuple((w - 1 - y, x) for x, y in q)


def residual_text(image: np.ndarray, ocr, check: CheckConfig = DEFAULT_CHECK) -> list[OcrBox]:
    """Text still readable on ``image``: regions the detector finds at any configured scale/rotation whose best
    read (over four rotations) is meaningful. Empty when the image is clean."""
    import cv2

    if not image.any():
        return []
    found: list[OcrBox] = []
    for k in sorted({r // 90 % 4 for r in check.rotations} & {0, 1}):
        turned = np.ascontiguousarray(np.rot90(image, k))
        for asked in check.scales:
            scale = min(asked, check.max_side / max(turned.shape)) if asked > 1 else asked
            if asked > 1 and scale < 1.2:
                continue  # already large: the native pass has seen it at this size
            big = turned if scale == 1.0 else cv2.resize(turned, None, fx=scale, fy=scale,
                                                        interpolation=cv2.INTER_CUBIC)
            for box in ocr.read_all_rotations(big, ocr.detect(big)):
                if meaningful(box.text, box.score, check.min_score):
                    back = tuple((x / scale, y / scale) for x, y in box.quad)
                    found.append(OcrBox(_unrotate(back, k, image.shape), box.text, box.score))
    return found


def deidentify_panel(panel: np.ndarray, fov: np.ndarray, quads: list[Quad], ocr,
                     check: CheckConfig = DEFAULT_CHECK) -> tuple[np.ndarray, list[OcrBox]]:
    """Erase, check, erase what the check found (black, wider), check again. Returns the image and the text
    still readable (empty when clean); a non-empty list means quarantine."""
    clean = erase_regions(panel, quads, fov)
    erased_inside = bool((quad_mask(panel.shape, quads, 4) & fov).any())
    if not (erased_inside or check.always or check.scales != (1.0,) or check.rotations != (0,)):
        return clean, []
    left = residual_text(clean, ocr, check)
    if left:
        clean = erase_regions(clean, [b.quad for b in left], fov, pad=6, fill_inside=True)
        left = residual_text(clean, ocr, check)
    return clean, left
