"""Letters A-J rendered from the TrueType fonts bundled with matplotlib: a notMNIST-style OOD set.

**Semi-synthetic.** notMNIST (the EDL paper's OOD set) downloads at run time, so these glyphs are drawn on
the fly from the text fonts inside the matplotlib wheel (DejaVu, STIX, Computer Modern), each with a random
font, size and slant, then framed like MNIST digits: the ink is scaled into a 20x20 box (aspect kept) and its
centre of mass placed at the centre of a 28x28 image. Real glyph outlines, synthetic rendering.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

LETTERS = "ABCDEFGHIJ"
# symbol-only, fallback and "Display" subsets are not text fonts (missing or placeholder glyphs)
_NOT_TEXT = ("Display", "LastResort", "STIXSiz", "STIXNonUni", "cmex", "cmsy")


def font_files() -> list[Path]:
    """The text fonts bundled with matplotlib (lazy import: matplotlib is not a core dependency)."""
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("rendering the letters A-J needs matplotlib: pip install matplotlib") from error
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = sorted(p for p in folder.glob("*.ttf") if not any(tag in p.name for tag in _NOT_TEXT))
    if not fonts:
        raise FileNotFoundError(f"no TrueType text fonts in {folder}; reinstall matplotlib")
    return fonts


def _draw(font, letter: str, angle: float) -> np.ndarray:
    # FreeType coverage bitmap of one glyph: white ink (255) on black (0), like MNIST
    font.set_text(letter, angle)
    font.draw_glyphs_to_bitmap(antialiased=True)
    return np.asarray(font.get_image(), dtype=np.float32)


def frame_like_mnist(ink: np.ndarray, box: int = 20, size: int = 28) -> np.ndarray:
    """Crop to the ink, scale its longer side to ``box`` px, centre the centre of mass in ``size x size``."""
    rows, cols = np.nonzero(ink > 0)
    if rows.size == 0:
        raise ValueError("the glyph has no ink")
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = ink.shape
    scale = box / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    glyph = F.interpolate(
        torch.from_numpy(ink)[None, None], size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )[0, 0].numpy()
    # centre of mass -> image centre, clipped so the glyph stays inside the frame
    ys, xs = np.indices(glyph.shape)
    mass = glyph.sum()
    cy, cx = (ys * glyph).sum() / mass, (xs * glyph).sum() / mass
    top = int(np.clip(round(size / 2 - cy), 0, size - new_h))
    left = int(np.clip(round(size / 2 - cx), 0, size - new_w))
    out = np.zeros((size, size), np.float32)
    out[top : top + new_h, left : left + new_w] = glyph
    return np.clip(out / max(out.max(), 1e-6) * 255.0, 0, 255).round().astype(np.uint8)


def render_letters(per_letter: int = 500, seed: int = 0, max_slant: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """``per_letter`` images of each letter A-J: ``images [10 * per_letter, 28, 28] uint8``, ``labels`` 0-9."""
    if per_letter < 1:
        raise ValueError(f"per_letter must be >= 1, got {per_letter}")
    from matplotlib.ft2font import FT2Font

    fonts = [FT2Font(str(path)) for path in font_files()]
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, letter in enumerate(LETTERS):
        for _ in range(per_letter):
            font = fonts[rng.integers(len(fonts))]
            font.set_size(float(rng.uniform(28, 48)), 72)
            angle = float(rng.uniform(-max_slant, max_slant))
            images.append(frame_like_mnist(_draw(font, letter, angle), box=int(rng.integers(17, 21))))
            labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)
