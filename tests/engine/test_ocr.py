"""What the engine needs from OCR, asserted for both fixture fonts (matplotlib's DejaVu Sans and the committed
CJK subset), never for an exact read of an identifier: the detector covers every burned-in text pixel (erasure
rests on that), labels are read well enough to give the eye and the frame time, and after erasure neither
rapidocr nor tesseract finds text."""

from __future__ import annotations

import re

import numpy as np
import pytest

from clearmamba.engine.analyze import parse_eye, parse_frame_time
from clearmamba.engine.deidentify import CheckConfig, deidentify_panel, fov_mask, quad_mask, residual_text
from clearmamba.engine.ocr import TESSERACT_INSTALL, TesseractEngine, get_ocr, meaningful, tesseract_command
from clearmamba.testing.images import angiogram, draw_text

PHI = {"latin": "ZHANG WEI ID:3432265651", "cjk": "张伟 病案号:3432265651"}
LABEL = {"latin": "OD 8:43", "cjk": "右眼 OD 8:43"}
THOROUGH = CheckConfig(scales=(1.0, 2.0), rotations=(0, 90), always=True)


def _frame(font: str, vertical: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A frame with a PHI bar on top (or along the left edge), a label below; returns it, the clean frame and
    the mask of the PHI pixels."""
    base = np.pad(angiogram("OD", "FFA", 30, np.random.default_rng(0), 192), ((24, 24), (24, 0)))
    img = draw_text(base, (2, 24), PHI[font], size=13, vertical=True) if vertical else draw_text(
        base, (28, 4), PHI[font])
    phi_pixels = img != base
    return draw_text(img, (28, 192 + 28), LABEL[font]), base, phi_pixels


@pytest.mark.parametrize("font", ["latin", "cjk"])
@pytest.mark.parametrize("vertical", [False, True])
def test_detector_covers_every_phi_pixel(font, vertical):
    img, _, phi = _frame(font, vertical)
    covered = quad_mask(img.shape, get_ocr().detect(img), pad=4)
    assert phi.sum() > 100
    assert (phi & ~covered).sum() == 0  # erasure would leave no stroke of it


@pytest.mark.parametrize("font", ["latin", "cjk"])
def test_labels_give_eye_and_time_before_erasure(font):
    img, _, _ = _frame(font)
    bottom = [b for b in get_ocr()(img) if b.rect[1] > img.shape[0] - 40]
    assert bottom and parse_eye(bottom[0].text) == "OD" and parse_frame_time(bottom[0].text) == 523.0
    assert all(0 <= b.score <= 1 for b in bottom)


@pytest.mark.parametrize("font", ["latin", "cjk"])
@pytest.mark.parametrize("vertical", [False, True])
def test_nothing_readable_after_erasure(font, vertical):
    img, _, _ = _frame(font, vertical)
    panel, fov = img[24:216, 24:216], fov_mask(img)[24:216, 24:216]
    ocr = get_ocr()
    # the check reads a region at four rotations: the vertical ID is text to it before erasure
    assert any(meaningful(b.text, b.score) for b in ocr.read_all_rotations(img, ocr.detect(img)))
    clean, left = deidentify_panel(panel, fov, [], ocr, THOROUGH)
    assert left == [] and residual_text(clean, ocr, THOROUGH) == []
    assert not clean[~fov].any()  # black outside the field of view, by construction


@pytest.mark.skipif(tesseract_command() is None, reason=f"second OCR engine: {TESSERACT_INSTALL}")
@pytest.mark.parametrize("vertical", [False, True])
def test_tesseract_second_opinion_sees_the_id_before_and_nothing_after(vertical):
    img, _, _ = _frame("latin", vertical)
    engine = TesseractEngine()
    turned = np.ascontiguousarray(np.rot90(img, -1)) if vertical else img
    assert re.search(r"\d{6,}", " ".join(b.text for b in engine(turned)).replace(" ", ""))
    panel, fov = img[24:216, 24:216], fov_mask(img)[24:216, 24:216]
    clean, _ = deidentify_panel(panel, fov, [], get_ocr(), THOROUGH)
    for k in range(4):
        read = " ".join(b.text for b in engine(np.ascontiguousarray(np.rot90(clean, k))))
        assert not re.search(r"\d{4,}|ZHANG", read.replace(" ", "")), read


@pytest.mark.parametrize("font", ["latin", "cjk"])
def test_text_on_the_retina_is_found_and_erased(font):
    panel = draw_text(angiogram("OS", "FFA", 40, np.random.default_rng(3), 192), (50, 112), PHI[font][-10:], size=12)
    fov = fov_mask(panel)
    ocr = get_ocr()
    quads = ocr.detect(panel)
    assert quads, "the ID over the retina is a text region"
    clean, left = deidentify_panel(panel, fov, quads, ocr, THOROUGH)
    assert left == []
    reads = " ".join(b.text for k in range(4) for b in ocr(np.ascontiguousarray(np.rot90(clean, k))))
    assert not re.search(r"\d{3,}", reads.replace(" ", "")), reads
    assert clean[fov].mean() > 20  # inpainted retina, not a black hole


def test_allocator_arena_changes_speed_not_results():
    from clearmamba.engine.ocr import RapidOcrEngine

    img, _, _ = _frame("cjk", vertical=True)
    without, with_arena = RapidOcrEngine(arena=False), RapidOcrEngine(arena=True)
    for _ in range(2):  # the second call re-uses the arena's buffers
        a, b = without(img), with_arena(img)
        assert len(a) >= 2 and [(x.quad, x.text) for x in a] == [(y.quad, y.text) for y in b]
        np.testing.assert_allclose([x.score for x in a], [y.score for y in b], rtol=1e-5)
