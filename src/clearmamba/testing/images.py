"""Synthetic angiogram frames and burned-in text for fixtures (no patient data: everything is drawn)."""

from __future__ import annotations

import io

import numpy as np

from clearmamba.testing.fonts import is_cjk, pil_font


def angiogram(
    eye: str, modality: str, time_s: float, rng: np.random.Generator, size: int = 192
) -> np.ndarray:
    """A grey angiogram frame: circular field, optic disc on the nasal side (image-right for OD), vessels
    arching temporally, a few bright lesions. Brightness rises with time after injection."""
    import cv2

    img = np.zeros((size, size), np.float32)
    c, r = size / 2, size * 0.46
    fov = np.zeros_like(img)
    cv2.circle(fov, (int(c), int(c)), int(r), 1.0, -1)
    phase = min(time_s / 60.0, 1.0)
    base = (30 + 40 * phase) if modality == "FFA" else (45 + 20 * phase)
    img += fov * base
    side = 1 if eye == "OD" else -1
    disc = (int(c + side * 0.45 * r), int(c + rng.uniform(-0.05, 0.05) * r))
    vessel = 150 + 60 * phase if modality == "FFA" else 120
    for k in range(6):
        pts = [disc]
        x, y = disc
        heading = (np.pi if side == 1 else 0.0) + (k - 2.5) * 0.45  # towards the temporal side
        for _ in range(14):
            heading += rng.normal(0, 0.18)
            x, y = x + np.cos(heading) * size * 0.05, y + np.sin(heading) * size * 0.05
            pts.append((int(x), int(y)))
        cv2.polylines(img, [np.array(pts, np.int32)], False, vessel, max(1, size // 90) + (k % 2))
    cv2.circle(img, disc, int(size * 0.07), 235, -1)
    for _ in range(int(rng.integers(2, 7))):
        p = (int(c + rng.uniform(-0.5, 0.5) * r), int(c + rng.uniform(-0.5, 0.5) * r))
        cv2.circle(img, p, int(rng.integers(2, 5)), 200, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.2) * fov
    img += rng.normal(0, 3, img.shape) * fov
    return np.clip(img, 0, 255).astype(np.uint8)


def text_size(text: str, size: int = 14) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` drawn horizontally."""
    x0, y0, x1, y1 = pil_font(size, is_cjk(text)).getbbox(text)
    return int(x1), int(y1)


def draw_text(img: np.ndarray, xy: tuple[int, int], text: str, size: int = 14, vertical: bool = False,
              fill: int = 255) -> np.ndarray:
    """``img`` with ``text`` burned in at ``xy`` (top-left); ``vertical`` writes it bottom-to-top (rotated
    90 degrees), as devices print along a left edge."""
    from PIL import Image, ImageDraw

    font = pil_font(size, is_cjk(text))
    if not vertical:
        pil = Image.fromarray(img)
        ImageDraw.Draw(pil).text(xy, text, font=font, fill=fill)
        return np.asarray(pil).copy()
    w, h = text_size(text, size)
    strip = Image.new("L", (w + 4, h + 4), 0)
    ImageDraw.Draw(strip).text((2, 0), text, font=font, fill=255)
    mask = np.asarray(strip.rotate(90, expand=True)) > 0
    out = img.copy()
    x, y = xy
    hh, ww = min(mask.shape[0], out.shape[0] - y), min(mask.shape[1], out.shape[1] - x)
    out[y : y + hh, x : x + ww][mask[:hh, :ww]] = fill
    return out


def encode_image(img: np.ndarray, jpeg_quality: int | None = None) -> bytes:
    """PNG bytes, or JPEG at ``jpeg_quality`` (lossy ringing around text, as archives store them)."""
    from PIL import Image

    buf = io.BytesIO()
    if jpeg_quality:
        Image.fromarray(img).save(buf, "JPEG", quality=jpeg_quality)
    else:
        Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()
