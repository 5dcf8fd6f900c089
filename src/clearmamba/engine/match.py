"""Matcher: split composites (two eyes side by side, or a grid of frames) into single panels and reject page
fragments that are not fundus images; give each panel the labels nearest to it (beside, above, below or on it);
decide the eye (the printed label first, the page's context next, the optic disc only as a tie-breaker) and
the frame time; order frames deterministically."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clearmamba.engine.analyze import parse_eye, parse_frame_time, parse_modality

PixelBox = tuple[int, int, int, int]  # x0 y0 x1 y1, pixels, y down
Rect = tuple[float, float, float, float]  # x0 y0 x1 y1, PDF points, y up


def _split_wide(box: PixelBox, fov: np.ndarray) -> list[PixelBox]:
    """A field twice as wide as tall is two fields touching: cut at the narrowest column of its middle."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w < 1.7 * h:
        return [box]
    cols = fov[y0:y1, x0:x1].sum(axis=0).astype(float)
    lo, hi = w // 3, 2 * w // 3
    cut = lo + int(np.argmin(cols[lo:hi]))
    if cols[cut] > 0.5 * cols.max():
        return [box]
    return [(x0, y0, x0 + cut, y1), (x0 + cut, y0, x1, y1)]


def split_panels(fov: np.ndarray, min_frac: float = 0.04) -> list[PixelBox]:
    """Bounding boxes of the separate fields of view, row by row then left to right (empty when none)."""
    import cv2

    h, w = fov.shape
    _, _, stats, _ = cv2.connectedComponentsWithStats(fov.astype(np.uint8))
    boxes = [
        part
        for x, y, bw, bh, area in stats[1:]
        if area >= min_frac * h * w
        for part in _split_wide((int(x), int(y), int(x + bw), int(y + bh)), fov)
    ]
    if not boxes:
        return []
    row_h = max(b[3] - b[1] for b in boxes) / 2
    return sorted(boxes, key=lambda b: (round(b[1] / row_h), b[0]))


def is_fundus_panel(crop: np.ndarray, fov: np.ndarray, min_side: int = 48) -> bool:
    """A fundus image rather than a page fragment (a bold heading, a table rule, a logo, half a photo): big
    enough, not a strip, mostly field of view, and textured inside it."""
    h, w = crop.shape
    if min(h, w) < min_side or not 0.4 <= w / h <= 2.5:
        return False
    if fov.mean() < 0.45:
        return False
    inside = crop[fov]
    return inside.size > 0 and float(inside.std()) >= 4.0 and float(inside.mean()) >= 12.0


def disc_side_eye(panel: np.ndarray, fov: np.ndarray | None = None) -> tuple[str | None, float]:
    """(eye, confidence 0..1) from the optic disc, the brightest large blob: OD when right of centre, OS when
    left (images as seen by the examiner, nasal disc image-right for OD). Confidence grows with the blob's
    contrast and its distance from the centre; (None, 0) when central or unclear. A bright lesion can pose as
    the disc, so this is only ever a tie-breaker."""
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
        return None, 0.0
    _, peak, _, (x, _) = cv2.minMaxLoc(blurred)
    contrast = peak / max(float(np.median(inside)), 1.0)
    offset = (x - cx) / max(half, 1)
    if contrast < 1.3 or abs(offset) <= 0.2:
        return None, 0.0
    confidence = float(min(1.0, (contrast - 1.3) / 0.7) * min(1.0, (abs(offset) - 0.2) / 0.3))
    return ("OD" if offset > 0 else "OS"), round(confidence, 3)


@dataclass(frozen=True)
class Label:
    """A piece of text that may describe a panel: burned into the image or printed on the page."""

    text: str
    score: float
    rect: Rect
    eye: str | None
    time: float | None
    modality: str | None


def make_label(text: str, score: float, rect: Rect) -> Label | None:
    """The label a text carries (eye, frame time, modality), or None when it carries none of them."""
    eye = parse_eye(text)
    time = parse_frame_time(text)
    modality = parse_modality(text)
    if eye not in ("OD", "OS"):
        eye = None
    if eye is None and time is None and modality is None:
        return None
    return Label(text, score, rect, eye, time, modality)


def label_distance(label: Rect, panel: Rect) -> float:
    """How far a label is from a panel, in units of the panel's longer side: the gap along one axis when the
    label faces the panel (under or over its columns, beside its rows), twice the corner gap otherwise (a
    caption under the next panel is not this panel's)."""
    dx = max(0.0, max(label[0], panel[0]) - min(label[2], panel[2]))
    dy = max(0.0, max(label[1], panel[1]) - min(label[3], panel[3]))
    facing = dx == 0.0 or dy == 0.0
    return float(np.hypot(dx, dy)) * (1.0 if facing else 2.0) / max(panel[2] - panel[0], panel[3] - panel[1])


def assign_labels(labels: list[Label], panels: list[Rect], images: list[Rect] | None = None,
                  reach: float = 0.6, tie: float = 0.05) -> list[list[tuple[float, Label]]]:
    """Each label goes to the one panel it is nearest to (:func:`label_distance`), if within ``reach``; a label
    about as near to two panels (within ``tie``, unless under half the other distance) goes to neither. With
    ``images`` (the rectangle of the picture
    each panel was cut from), a label first goes to the picture it is printed under, over or beside (a caption
    under a tall frame can lie nearer to the top of the frame below), then to the nearest panel of that picture.
    Returns, per panel, its labels with their distances, nearest first."""
    images = images or panels
    out: list[list[tuple[float, Label]]] = [[] for _ in panels]
    for label in labels:
        ranked = sorted(((label_distance(label.rect, images[i]), label_distance(label.rect, p)), i)
                        for i, p in enumerate(panels))
        if not ranked or ranked[0][0][0] > reach:
            continue
        best_image = images[ranked[0][1]]
        others = [r for r in ranked if images[r[1]] != best_image]
        if others and _tied(ranked[0][0][0], others[0][0][0], tie):
            continue  # as near to two pictures
        mine = sorted((d_panel, i) for (_, d_panel), i in ranked if images[i] == best_image)
        if len(mine) > 1 and _tied(mine[0][0], mine[1][0], tie):
            continue  # as near to two panels of one picture
        d, i = mine[0]
        out[i].append((d, label))
    for near in out:
        near.sort(key=lambda dl: (dl[0], dl[1].rect[0], -dl[1].rect[1]))
    return out


def _tied(nearest: float, second: float, tie: float) -> bool:
    """Two distances too close to tell which is meant: within ``tie`` and the nearer not under half the other."""
    return second - nearest < tie and nearest > 0.5 * second


def headings(lines: list[tuple[str, Rect]], panels: list[Rect]) -> list[str]:
    """Lines printed above every panel of the page (a header block, "OD late phase"): page context, not any
    one panel's label."""
    if not panels:
        return []
    top = max(p[3] for p in panels)
    return [text for text, rect in lines if rect[1] >= top]


@dataclass
class PanelFields:
    eye: str | None
    eye_source: str  # label | label+disc | context | context+disc | disc | none
    eye_review: bool  # the eye needs a person (no printed evidence, or printed evidence in conflict)
    disc_agrees: bool | None  # the disc cue against the printed eye (None: no printed eye or no disc)
    modality: str | None
    frame_time: float | None
    min_label_score: float


def panel_fields(near: list[tuple[float, Label]], disc: tuple[str | None, float], context_eye: str | None,
                 context_modality: str | None, min_disc_confidence: float = 0.5) -> PanelFields:
    """Fields of one panel from its nearest labels, the page/report context and the disc cue."""
    disc_eye, disc_conf = disc
    eyes = [(d, lab.eye) for d, lab in near if lab.eye]
    review, tiebreak = False, False
    printed, source = None, "none"
    if eyes:
        nearest = eyes[0][0]
        candidates = {e for d, e in eyes if d <= nearest + 0.05}
        if len(candidates) == 1:
            printed, source = candidates.pop(), "label"
        elif disc_eye in candidates and disc_conf >= min_disc_confidence:
            printed, source, tiebreak = disc_eye, "label", True  # two eyes equally near: the disc breaks it
        else:
            review, source = True, "label"
    elif context_eye in ("OD", "OS"):
        printed, source = context_eye, "context"
        if disc_eye and disc_conf >= min_disc_confidence and disc_eye != context_eye:
            review = True  # the page's eye is weaker than a label: a confident disc against it goes to a person
    disc_agrees = None if printed is None or disc_eye is None else disc_eye == printed
    if printed is not None:
        eye = printed
        if disc_agrees:
            source += "+disc"
    else:  # nothing printed: the disc only proposes, a person decides
        eye, review = disc_eye, True
        source = "disc" if disc_eye and source == "none" else source
    if tiebreak:
        source = "label+disc"
    mods = [lab.modality for _, lab in near if lab.modality]
    modality = mods[0] if mods else context_modality
    if modality == "FFA+ICGA":
        modality = None
    # the nearest time; at equal distance a time written with an eye or modality tag beats a bare one
    timed = sorted(((d, not (lab.eye or lab.modality)), lab.time) for d, lab in near if lab.time is not None)
    scores = [lab.score for _, lab in near if lab.eye or lab.time is not None]
    return PanelFields(eye, source, review, disc_agrees, modality, timed[0][1] if timed else None,
                       min(scores) if scores else 1.0)


def frame_order_key(frame_time: float | None, page: int, rect: Rect) -> tuple:
    """Frames in time order; unknown times last; ties by page, then top to bottom, then left to right."""
    return (frame_time is None, frame_time or 0.0, page, -round(rect[3], 1), round(rect[0], 1))
