"""Offline OCR: rapidocr (ONNX models shipped inside its wheel, English + Chinese) with Debian tesseract as a
fallback. One engine per process, created lazily, single-threaded so that ``--workers`` decides the cores."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class OcrBox:
    """One text line found in an image: its quadrilateral (4 x 2, pixel x y), the text and a 0..1 score."""

    quad: tuple[tuple[float, float], ...]
    text: str
    score: float

    @property
    def rect(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.quad]
        ys = [p[1] for p in self.quad]
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.rect
        return (x0 + x1) / 2, (y0 + y1) / 2


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    return np.ascontiguousarray(image[:, :, :3])


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(self, threads: int = 1):
        from rapidocr import RapidOCR

        self._ocr = RapidOCR(
            params={
                "Global.log_level": "critical",
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                # the default scales every image UP to a 736 px short side; labels on small angiograms are
                # legible at native size, and detection time grows with the pixel count
                "Det.limit_type": "max",
                "Det.limit_side_len": 960,
                "Global.use_cls": False,  # burned-in labels are upright
            }
        )

    def __call__(self, image: np.ndarray) -> list[OcrBox]:
        result = self._ocr(_to_bgr(image))
        if result.boxes is None or result.txts is None:
            return []
        return [
            OcrBox(tuple((float(x), float(y)) for x, y in quad), str(text), float(score))
            for quad, text, score in zip(result.boxes, result.txts, result.scores)
        ]


class TesseractEngine:
    """Fallback through the ``tesseract`` binary
    (apt: tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim)."""

    name = "tesseract"

    def __init__(self, langs: str = "eng+chi_sim"):
        if shutil.which("tesseract") is None:
            raise RuntimeError("tesseract binary not found (apt-get install tesseract-ocr)")
        self.langs = langs

    def __call__(self, image: np.ndarray) -> list[OcrBox]:
        import cv2

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.png"
            cv2.imwrite(str(src), image)
            out = subprocess.run(
                ["tesseract", str(src), "-", "-l", self.langs, "--psm", "11", "tsv"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        lines: dict[tuple[str, str, str], list[tuple[int, int, int, int, str, float]]] = {}
        for row in out.splitlines()[1:]:
            cols = row.split("\t")
            if len(cols) < 12 or not cols[11].strip() or float(cols[10]) < 0:
                continue
            x, y, w, h = (int(c) for c in cols[6:10])
            lines.setdefault((cols[2], cols[3], cols[4]), []).append(
                (x, y, x + w, y + h, cols[11], float(cols[10]))
            )
        boxes = []
        for words in lines.values():
            x0, y0 = min(w[0] for w in words), min(w[1] for w in words)
            x1, y1 = max(w[2] for w in words), max(w[3] for w in words)
            text = " ".join(w[4] for w in words)
            score = sum(w[5] for w in words) / len(words) / 100.0
            boxes.append(OcrBox(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), text, score))
        return boxes


@lru_cache(maxsize=1)
def get_ocr(threads: int = 1):
    """The process-wide OCR engine: rapidocr if importable, else tesseract; a clear error when neither is."""
    try:
        return RapidOcrEngine(threads)
    except ImportError:
        pass
    try:
        return TesseractEngine()
    except RuntimeError as err:
        raise RuntimeError(
            "no OCR engine: install the engine extra (pip install 'clearmamba[engine]', which brings "
            "rapidocr and onnxruntime) or apt-get install tesseract-ocr tesseract-ocr-chi-sim"
        ) from err
