from __future__ import annotations

import shutil

import numpy as np
import pytest

from clearmamba.engine.analyze import parse_eye, parse_frame_time
from clearmamba.engine.ocr import OcrBox, TesseractEngine, get_ocr
from clearmamba.engine.synthetic import _draw_text, angiogram, cjk_font_path


def _labelled_frame() -> np.ndarray:
    img = np.pad(angiogram("OD", "FFA", 30, np.random.default_rng(0), 192), ((24, 24), (0, 0)))
    img = _draw_text(img, (4, 4), "ZHANG WEI ID:3432265651")
    return _draw_text(img, (4, 192 + 28), ("右眼 " if cjk_font_path() else "") + "OD 8:43")


def assert_reads_labels(boxes: list[OcrBox], h: int):
    top = [b for b in boxes if "3432265651" in b.text.replace(" ", "")]
    assert top and top[0].rect[3] < 30  # found, and its box lies in the top strip
    bottom = [b for b in boxes if b.rect[1] > h - 40]
    assert bottom and parse_eye(bottom[0].text) == "OD" and parse_frame_time(bottom[0].text) == 523.0
    assert all(0 <= b.score <= 1 for b in boxes)


def test_rapidocr_reads_burned_in_labels():
    img = _labelled_frame()
    assert_reads_labels(get_ocr()(img), img.shape[0])


@pytest.mark.skipif(
    shutil.which("tesseract") is None,
    reason="fallback OCR needs apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim",
)
def test_tesseract_fallback_reads_the_same_labels():
    img = _labelled_frame()
    assert_reads_labels(TesseractEngine()(img), img.shape[0])
