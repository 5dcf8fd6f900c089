from __future__ import annotations

import re

import numpy as np
import pytest

from clearmamba.engine.deidentify import REDACTED, PhiScrubber, erase_text, fov_mask, text_boxes
from clearmamba.engine.match import disc_side_eye, group_exams, panel_fields, split_panels
from clearmamba.engine.ocr import get_ocr
from clearmamba.engine.synthetic import _draw_text, angiogram
from tests.engine.helpers import match_truth, ocr_text


def _circle(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c, r = size / 2, size * 0.46
    return (xx - c) ** 2 + (yy - c) ** 2 <= r * r


def test_scrubber_removes_known_values_and_patterns():
    s = PhiScrubber(["ZHANG WEI", "张伟", "3432265651", "134-1273-4011"])
    text = "Zhang  Wei (张 伟), MRN 3432265651, tel 134-1273-4011, seen 2020-09-07; CSC OD, frame 0:32"
    out = s.scrub(text)
    for leaked in ("zhang", "张", "3432265651", "134-1273", "2020-09-07"):
        assert leaked not in out.lower()
    assert "CSC OD, frame 0:32" in out and out.count(REDACTED) >= 5
    assert s.hits("ZHANGWEI late") == ["zhangwei"]
    assert s.hits("OD FA 0:32 Central serous chorioretinopathy") == []
    assert PhiScrubber().hits("ID:A1234567") != []  # pattern alone, no known values


def test_fov_mask_matches_the_true_circle():
    img = angiogram("OD", "FFA", 30, np.random.default_rng(0), 192)
    img = _draw_text(np.pad(img, ((24, 24), (0, 0))), (4, 4), "ZHANG WEI ID:3432265651")
    mask = fov_mask(img)[24:-24]
    truth = _circle(192)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.95


def test_erase_text_outside_and_inside_the_field():
    rng = np.random.default_rng(1)
    img = np.pad(angiogram("OS", "FFA", 40, rng, 192), ((24, 0), (0, 0)))
    img = _draw_text(img, (4, 4), "LI NA ID:1234567890")  # on the black bar
    img = _draw_text(img, (70, 150), "9:41")  # on the retina
    ocr = get_ocr()
    boxes = text_boxes(ocr(img), img.shape)
    assert any("1234567890" in b.text for b in boxes)
    out = erase_text(img, boxes)
    assert not re.search(r"\d{6,}|LI ?NA|9:41", " ".join(b.text for b in ocr(out)))
    # nothing outside the (padded) text boxes changes; the retina under the in-field text is filled, not black
    touched = np.zeros(img.shape, bool)
    for b in boxes:
        x0, y0, x1, y1 = (int(v) for v in b.rect)
        touched[max(0, y0 - 6) : y1 + 6, max(0, x0 - 6) : x1 + 6] = True
    np.testing.assert_array_equal(out[~touched], img[~touched])
    in_field = [b for b in boxes if "9:41" in b.text][0]
    x0, y0, x1, y1 = (int(v) for v in in_field.rect)
    assert out[y0:y1, x0:x1].mean() > 20  # inpainted retina, not a black hole


def test_split_panels_two_eyes_and_grid():
    rng = np.random.default_rng(2)
    a, b = angiogram("OD", "FFA", 30, rng, 128), angiogram("OS", "FFA", 31, rng, 128)
    comp = np.zeros((160, 2 * 128 + 12), np.uint8)
    comp[16:144, :128], comp[16:144, 140:] = a, b
    panels = split_panels(fov_mask(comp))
    assert len(panels) == 2 and panels[0][2] <= 128 and panels[1][0] >= 140
    grid = np.zeros((2 * 128 + 8, 2 * 128 + 8), np.uint8)
    for i, (y, x) in enumerate([(0, 0), (0, 136), (136, 0), (136, 136)]):
        grid[y : y + 128, x : x + 128] = angiogram("OD", "ICGA", 60 * i, rng, 128)
    boxes = split_panels(fov_mask(grid))
    corners = [(b[0] > 100, b[1] > 100) for b in boxes]
    assert corners == [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("seed", range(6))
def test_disc_side_gives_the_eye(seed):
    rng = np.random.default_rng(seed)
    for eye in ("OD", "OS"):
        img = angiogram(eye, "FFA" if seed % 2 else "ICGA", float(rng.integers(10, 900)), rng, 160)
        assert disc_side_eye(img, fov_mask(img)) == eye


def test_panel_fields_combine_label_disc_and_context():
    pf = panel_fields([("右眼 OD  FA 0:19", 0.99), ("ZHANG WEI 2020-09-07 9:34", 0.98)], "OD", None, "FFA")
    assert (pf.eye, pf.eye_source, pf.eye_conflict, pf.modality, pf.frame_time) == ("OD", "label+disc", False,
                                                                                      "FFA", 19.0)
    assert panel_fields([("OD 1:05", 0.99)], "OS", None, "FFA").eye_conflict  # label vs disc: review
    assert panel_fields([], "OS", None, "ICGA").eye_source == "disc"
    assert panel_fields([("OS", 0.9)], None, None, "FFA+ICGA").modality is None  # both named, no tag: unknown
    assert panel_fields([("ICGA 5:10", 0.9)], None, "OD", "FFA+ICGA").modality == "ICGA"


def test_group_exams_orders_frames_by_time():
    frames = [dict(eye="OD", modality="FFA", frame_time=t, page=1) for t in (300.0, None, 32.0)]
    frames.append(dict(eye="OS", modality="FFA", frame_time=10.0, page=1))
    groups = group_exams(frames)
    assert [f["frame_time"] for f in groups[("OD", "FFA")]] == [32.0, 300.0, None]
    assert len(groups[("OS", "FFA")]) == 1


@pytest.fixture(scope="module")
def processed(corpus, tmp_path_factory):
    from clearmamba.engine.analyze import load_vocabulary
    from clearmamba.engine.process import process_report

    out = tmp_path_factory.mktemp("processed")
    (out / "images").mkdir()
    (out / "quarantine").mkdir()
    vocab = load_vocabulary(None)
    pdfs = sorted(corpus["reports"].glob("*.pdf"))
    results = {p.name: process_report(p, out, vocab, b"k" * 32) for p in pdfs}
    return out, results


def test_process_report_fields_match_truth(corpus, processed):
    _, results = processed
    for name, truth in corpus["truths"].items():
        res = results[name]
        assert res.error is None
        pairs = match_truth(res.frames, truth.frames)
        assert len(pairs) == len(truth.frames) == len(res.frames), name
        for fr, tf in pairs:
            assert (fr.eye, fr.modality, fr.frame_time) == (tf.eye, tf.modality, tf.time_s), name
        assert res.label == truth.label
    assert results["b_zh.pdf"].reasons == ["unknown_diagnosis"]  # never guessed
    # the same patient in two reports meets under the same keyed hash, a different one does not
    keys = {n: r.patient_key for n, r in results.items()}
    assert keys["a_en.pdf"] == keys["c_scan.pdf"] != keys["b_zh.pdf"]


def test_no_planted_phi_survives_in_output_images_or_text(corpus, processed):
    from PIL import Image

    out, results = processed
    files = sorted((out / "images").glob("*.png"))
    assert len(files) == sum(len(r.frames) for r in results.values()) == 12
    assert not list((out / "quarantine").glob("*.png"))
    phi = {p for t in corpus["truths"].values() for p in t.phi}
    squash = lambda s: re.sub(r"\s+", "", s).lower()  # noqa: E731
    for f in files:
        assert re.fullmatch(r"[0-9a-f]{16}\.png", f.name)
        text = squash(ocr_text(f))
        assert not [p for p in phi if squash(p) in text], f
        with Image.open(f) as im:
            assert not {k for k in im.info if k not in ("dpi", "gamma")}  # no text chunks
    kept_text = " ".join(r.diagnosis or "" for r in results.values()) + " ".join(
        str(fr.__dict__) for r in results.values() for fr in r.frames
    )
    assert not [p for p in phi if squash(p) in squash(kept_text)]
