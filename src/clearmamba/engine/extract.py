"""Extractor: every embedded image at native resolution with its page and position, plus the text layer as
positioned lines. Pages that are scans (no text, one image covering the page) are rendered and read by OCR,
and the photographs on them are cut out of the render. pypdfium2 (Apache/BSD) only; originals are read once,
read-only, into memory and never written."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Rect = tuple[float, float, float, float]  # PDF points, x0 y0 x1 y1, y up


@dataclass(frozen=True)
class Limits:
    """Guards against hostile files; anything above them is recorded as a bad PDF, never decoded."""

    max_file_bytes: int = 512 * 2**20
    max_pages: int = 200
    max_image_pixels: int = 64_000_000  # declared width x height of one embedded image
    max_page_points: float = 5_000.0  # a page side, points (A0 is 3370; PDF allows 14400)
    scan_render_side: int = 1800  # longest side of a rendered scanned page, pixels (at most the scan's own)
    scan_detect_side: int = 720  # longest side the text detector sees of a whole page


DEFAULT_LIMITS = Limits()


class BadPdfError(Exception):
    """A file that cannot be processed; ``kind`` is one of not_pdf, encrypted, truncated, bomb, too_large,
    unreadable."""

    def __init__(self, path: Path | str, kind: str, detail: str):
        super().__init__(f"{path}: {kind}: {detail}")
        self.path, self.kind, self.detail = str(path), kind, detail


@dataclass
class TextLine:
    page: int  # 1-based
    rect: Rect
    text: str
    score: float = 1.0  # 1.0 for the text layer, the OCR score for scanned pages


@dataclass
class PageImage:
    page: int
    rect: Rect  # where the image sits on the page
    pixels: np.ndarray  # h w (grey, uint8), native resolution
    scanned: bool = False  # cut out of a rendered scan rather than embedded


@dataclass
class Extraction:
    sha256: str
    n_pages: int
    lines: list[TextLine] = field(default_factory=list)
    images: list[PageImage] = field(default_factory=list)
    scanned_pages: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


def read_pdf_bytes(path: Path, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The file's bytes (opened read-only), after cheap structural checks that name what is wrong."""
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise BadPdfError(path, "too_large", f"{size} bytes > limit {limits.max_file_bytes}")
    with open(path, "rb") as fh:
        data = fh.read()
    if b"%PDF-" not in data[:1024]:
        raise BadPdfError(path, "not_pdf", "no '%PDF-' header in the first 1024 bytes")
    if b"%%EOF" not in data[-2048:]:
        raise BadPdfError(path, "truncated", "no '%%EOF' marker at the end of the file")
    return data


def _open(path: Path, data: bytes):
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as err:
        kind = "encrypted" if "password" in str(err).lower() else "unreadable"
        raise BadPdfError(path, kind, str(err)) from err


def _to_grey(arr: np.ndarray) -> np.ndarray:
    import cv2

    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3:  # pdfium bitmaps are BGR(A)/BGRx
        arr = cv2.cvtColor(np.ascontiguousarray(arr[:, :, :3]), cv2.COLOR_BGR2GRAY)
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _text_lines(page, page_no: int) -> list[TextLine]:
    textpage = page.get_textpage()
    lines = []
    for i in range(textpage.count_rects()):
        rect = textpage.get_rect(i)
        text = textpage.get_text_bounded(*rect).strip()
        if text:
            lines.append(TextLine(page_no, tuple(float(v) for v in rect), text))
    textpage.close()
    return lines


def _long_side_angle(rect) -> float:
    """Angle (degrees, in (-45, 45]) of a cv2.minAreaRect's long side against the x axis."""
    (_, _), (w, h), angle = rect
    theta = angle if w >= h else angle - 90.0
    while theta > 45:
        theta -= 90.0
    while theta <= -45:
        theta += 90.0
    return theta


def skew_angle(grey: np.ndarray) -> float:
    """How far a scanned page is turned (degrees, cv2 sense: rotating by it makes the page upright), from the
    edges of its photographs and its text lines, weighted by their length; 0 when nothing is straight enough."""
    import cv2

    dark = (cv2.GaussianBlur(grey, (5, 5), 0) < 110).astype(np.uint8)
    h, w = grey.shape
    angles, weights = [], []
    photos = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    lines = cv2.dilate(dark, np.ones((3, max(15, w // 60)), np.uint8))
    for mask, is_photo in ((photos, True), (lines, False)):
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            rect = cv2.minAreaRect(c)
            long_side, short_side = max(rect[1]), min(rect[1])
            if is_photo and short_side >= 48 and cv2.contourArea(c) > 0.5 * long_side * short_side:
                angles.append(_long_side_angle(rect))
                weights.append(4 * long_side)
            elif not is_photo and long_side > max(80, 6 * short_side) and long_side < 0.95 * w:
                angles.append(_long_side_angle(rect))
                weights.append(long_side)
    if not angles:
        return 0.0
    order = np.argsort(angles)
    cum = np.cumsum(np.array(weights)[order])
    return float(np.array(angles)[order][np.searchsorted(cum, cum[-1] / 2)])  # weighted median


def deskew(grey: np.ndarray, min_deg: float = 0.2) -> tuple[np.ndarray, float]:
    """The page turned upright about its centre (paper-white corners) and the angle used."""
    import cv2

    angle = skew_angle(grey)
    if abs(angle) < min_deg:
        return grey, 0.0
    h, w = grey.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(grey, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=255), angle


def photo_regions(grey: np.ndarray, min_side: int = 48) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """Dark photographs on a light paper scan: connected dark regions large enough to be images, each as its
    bounding box (x0 y0 x1 y1, pixels) and the mask of the photo inside that box (the region filled, so the
    paper around a slightly turned photo is left out)."""
    import cv2

    dark = (cv2.GaussianBlur(grey, (5, 5), 0) < 110).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    contours, _ = cv2.findContours(dark, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        if w >= min_side and h >= min_side and cv2.contourArea(c) > 0.5 * w * h:
            mask = np.zeros((h, w), np.uint8)
            cv2.drawContours(mask, [c - np.array([x, y])], -1, 1, thickness=-1)
            found.append(((int(x), int(y), int(x + w), int(y + h)), mask.astype(bool)))
    return sorted(found, key=lambda r: (r[0][1] // 40, r[0][0]))


def _read_page(ocr, grey: np.ndarray, limits: Limits):
    """OCR of a whole page; body text (10 pt and up) stays legible to the detector at ``scan_detect_side``."""
    try:
        return ocr(grey, detect_side=limits.scan_detect_side)
    except TypeError:  # an engine without that option (tesseract)
        return ocr(grey)


def _scan_page(page, page_no: int, limits: Limits, ocr, native_px: tuple[int, int]) -> tuple[list[TextLine],
                                                                                          list[PageImage]]:
    """A scanned page: rendered at the scan's own resolution (never above ``scan_render_side``), turned upright,
    its photographs cut out (paper masked black), then the page read by OCR with the photographs painted white
    (their burned-in text is the image stage's business)."""
    w_pt, h_pt = page.get_size()
    scale = min(limits.scan_render_side / max(w_pt, h_pt), max(native_px[0] / w_pt, native_px[1] / h_pt))
    grey, _ = deskew(_to_grey(page.render(scale=scale, grayscale=True).to_numpy()))

    def to_points(x0, y0, x1, y1) -> Rect:  # pixels, y down -> points, y up
        return (x0 / scale, h_pt - y1 / scale, x1 / scale, h_pt - y0 / scale)

    images = []
    text_only = grey.copy()
    for (x0, y0, x1, y1), mask in photo_regions(grey):
        crop = np.where(mask, grey[y0:y1, x0:x1], 0).astype(np.uint8)
        images.append(PageImage(page_no, to_points(x0, y0, x1, y1), crop, scanned=True))
        text_only[y0:y1, x0:x1][mask] = 255
    boxes = [box for box in _read_page(ocr, text_only, limits) if box.text.strip()]
    lines = [TextLine(page_no, to_points(*box.rect), box.text, box.score) for box in boxes]
    lines.sort(key=lambda t: (-round(t.rect[3] / 6), t.rect[0]))
    return lines, images


def extract(path: str | Path, ocr=None, limits: Limits = DEFAULT_LIMITS) -> Extraction:
    """Text lines and native-resolution images of every page; ``ocr`` is called only for scanned pages."""
    import pypdfium2.raw as pdfium_c

    path = Path(path)
    data = read_pdf_bytes(path, limits)
    pdf = _open(path, data)
    try:
        n_pages = len(pdf)
        if n_pages > limits.max_pages:
            raise BadPdfError(path, "too_large", f"{n_pages} pages > limit {limits.max_pages}")
        result = Extraction(hashlib.sha256(data).hexdigest(), n_pages)
        for index in range(n_pages):
            page = pdf[index]
            page_no = index + 1
            w_pt, h_pt = page.get_size()
            if max(w_pt, h_pt) > limits.max_page_points:
                raise BadPdfError(
                    path,
                    "bomb",
                    f"page {page_no} is {w_pt:.0f} x {h_pt:.0f} pt, over the "
                    f"{limits.max_page_points:.0f} pt limit",
                )
            objs = list(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=2))
            for obj in objs:
                meta = obj.get_metadata()
                if meta.width * meta.height > limits.max_image_pixels:
                    raise BadPdfError(
                        path,
                        "bomb",
                        f"page {page_no} image declares {meta.width} x {meta.height} "
                        f"pixels, over the {limits.max_image_pixels} pixel limit",
                    )
            lines = _text_lines(page, page_no)
            full_page = [o for o in objs if _area(o.get_bounds()) >= 0.8 * w_pt * h_pt]
            if not lines and len(objs) == 1 and full_page:
                if ocr is None:
                    raise BadPdfError(
                        path, "unreadable", f"page {page_no} is a scan and no OCR engine was given"
                    )
                meta = objs[0].get_metadata()
                scan_lines, scan_images = _scan_page(page, page_no, limits, ocr, (meta.width, meta.height))
                result.lines += scan_lines
                result.images += scan_images
                result.scanned_pages.append(page_no)
                continue
            result.lines += lines
            for obj in objs:
                try:
                    arr = obj.get_bitmap(render=False).to_numpy()
                except Exception:  # unusual colour spaces/filters: let pdfium render the image object instead
                    arr = obj.get_bitmap(render=True).to_numpy()
                result.images.append(
                    PageImage(page_no, tuple(float(v) for v in obj.get_bounds()), _to_grey(arr))
                )
        return result
    finally:
        pdf.close()


def _area(rect) -> float:
    return max(0.0, rect[2] - rect[0]) * max(0.0, rect[3] - rect[1])
