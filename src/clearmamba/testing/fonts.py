"""Fonts for generated fixtures, chosen the same way on every machine: never from the system.

- Latin text: DejaVu Sans from matplotlib's wheel (a pinned package of the test extra).
- Text with Chinese characters: the WenQuanYi Micro Hei subset committed beside this file (Apache-2.0, see
  ``fonts/LICENSE.md``), which also has Latin glyphs, so mixed labels ("右眼 OD") use one font.

Both are also embedded into generated PDFs (reportlab ``TTFont``), so a page renders identically whether or not
the machine has any CJK font installed.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

CJK_FONT = Path(__file__).resolve().parent / "fonts" / "wqy-microhei-subset.ttf"
PDF_LATIN, PDF_CJK = "FixtureLatin", "FixtureCJK"


def is_cjk(text: str) -> bool:
    return any(ord(ch) >= 0x2E80 for ch in text)


@lru_cache(maxsize=1)
def latin_font_path() -> Path:
    """DejaVu Sans inside the installed matplotlib wheel."""
    try:
        import matplotlib
    except ImportError as err:  # the test extra brings it
        raise ImportError('fixture fonts need matplotlib: pip install "clearmamba[test]"') from err
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: matplotlib's DejaVu Sans is missing")
    return path


def font_path(text: str) -> Path:
    """The font a fixture draws ``text`` with: the CJK subset when it holds a Chinese character."""
    return CJK_FONT if is_cjk(text) else latin_font_path()


@lru_cache(maxsize=32)
def pil_font(size: int, cjk: bool):
    from PIL import ImageFont

    return ImageFont.truetype(str(CJK_FONT if cjk else latin_font_path()), size)


def missing_glyphs(text: str) -> set[str]:
    """Characters of ``text`` that the font chosen for it cannot draw (empty when all are covered)."""
    from fontTools.ttLib import TTFont

    cmap = TTFont(str(font_path(text))).getBestCmap()
    return {ch for ch in text if not ch.isspace() and ord(ch) not in cmap}


def register_pdf_fonts() -> tuple[str, str]:
    """Register both fonts with reportlab (embedded subsets in every PDF); returns (latin, cjk) names."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    registered = pdfmetrics.getRegisteredFontNames()
    if PDF_LATIN not in registered:
        pdfmetrics.registerFont(TTFont(PDF_LATIN, str(latin_font_path())))
    if PDF_CJK not in registered:
        pdfmetrics.registerFont(TTFont(PDF_CJK, str(CJK_FONT)))
    return PDF_LATIN, PDF_CJK
