from __future__ import annotations

import re

import numpy as np
import pytest

from clearmamba.engine.deidentify import erase_regions, fov_mask
from clearmamba.engine.match import (
    Label,
    assign_labels,
    disc_side_eye,
    frame_order_key,
    is_fundus_panel,
    make_label,
    panel_fields,
    split_panels,
)
from clearmamba.engine.ocr import get_ocr
from clearmamba.engine.phi import REDACTED, PhiScrubber
from clearmamba.testing.images import angiogram, draw_text, encode_image
from tests.engine.helpers import match_truth, ocr_text


def _circle(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    c, r = size / 2, size * 0.46
    return (xx - c) ** 2 + (yy - c) ** 2 <= r * r


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    import cv2

    return cv2.imdecode(np.frombuffer(encode_image(img, quality), np.uint8), cv2.IMREAD_GRAYSCALE)


def test_scrubber_removes_known_values_and_patterns():
    s = PhiScrubber(["ZHANG WEI", "张伟", "3432265651", "134-1273-4011"])
    text = ("Zhang  Wei (张 伟), MRN 3432265651, tel 134-1273-4011, seen 2020-09-07, born 07.03.1985 / 1985年3月7日"
            " / 03/07/1985; CSC OD, frame 0:32")
    out = s.scrub(text)
    for leaked in ("zhang", "张", "3432265651", "134-1273", "2020-09-07", "1985", "07.03"):
        assert leaked not in out.lower()
    assert "CSC OD, frame 0:32" in out and out.count(REDACTED) >= 8
    assert s.hits("ZHANGWEI late") == ["zhangwei"]
    assert s.hits("OD FA 0:32 Central serous chorioretinopathy") == []
    assert PhiScrubber().hits("ID:A1234567") != []  # pattern alone, no known values


@pytest.mark.parametrize("quality", [None, 25])
def test_fov_mask_matches_the_true_circle_even_after_jpeg(quality):
    img = angiogram("OD", "FFA", 15, np.random.default_rng(0), 192)  # an early, dark frame
    img = draw_text(np.pad(img, ((24, 24), (0, 0))), (4, 4), "ZHANG WEI ID:3432265651")
    img = _jpeg(img, quality) if quality else img
    mask = fov_mask(img)[24:-24]
    truth = _circle(192)
    assert (mask & truth).sum() / (mask | truth).sum() > 0.95


def test_erase_regions_blacks_out_outside_and_inpaints_inside():
    rng = np.random.default_rng(1)
    img = draw_text(angiogram("OS", "FFA", 40, rng, 192), (70, 150), "9:41")
    outside = img.copy()
    outside[0:10, 0:30] = 200  # something bright in a corner, outside the field
    fov = _circle(192)
    quad = ((66, 146), (110, 146), (110, 168), (66, 168))
    out = erase_regions(outside, [quad], fov)
    assert not out[~fov].any()
    ring = np.zeros(img.shape, bool)
    ring[140:175, 60:116] = True
    np.testing.assert_array_equal(out[fov & ~ring], img[fov & ~ring])  # the retina elsewhere is untouched
    assert out[150:165, 70:105].mean() > 20  # inpainted retina, not a black hole
    assert "9:41" not in ocr_text_of(out)


def ocr_text_of(img: np.ndarray) -> str:
    return " ".join(b.text for b in get_ocr()(img))


@pytest.mark.parametrize("quality", [None, 30])
def test_split_panels_two_eyes_grid_and_touching_fields(quality):
    rng = np.random.default_rng(2)
    a, b = angiogram("OD", "FFA", 30, rng, 128), angiogram("OS", "FFA", 31, rng, 128)
    comp = np.zeros((160, 2 * 128 + 12), np.uint8)
    comp[16:144, :128], comp[16:144, 140:] = a, b
    comp = _jpeg(comp, quality) if quality else comp
    panels = split_panels(fov_mask(comp))
    assert len(panels) == 2 and panels[0][2] <= 130 and panels[1][0] >= 138
    grid = np.zeros((2 * 128 + 8, 2 * 128 + 8), np.uint8)
    for i, (y, x) in enumerate([(0, 0), (0, 136), (136, 0), (136, 136)]):
        grid[y : y + 128, x : x + 128] = angiogram("OD", "ICGA", 60 * i, rng, 128)
    corners = [(b[0] > 100, b[1] > 100) for b in split_panels(fov_mask(grid))]
    assert corners == [(False, False), (True, False), (False, True), (True, True)]
    touching = np.zeros((128, 256), np.uint8)
    touching[:, :128], touching[:, 120:248] = a, np.maximum(touching[:, 120:248], b)
    assert len(split_panels(fov_mask(touching))) == 2


def test_fragments_are_not_fundus_panels():
    rng = np.random.default_rng(4)
    frame = angiogram("OD", "FFA", 60, rng, 160)
    fov = fov_mask(frame)
    assert is_fundus_panel(frame, fov)
    flat = np.full((120, 120), 90, np.uint8)  # a grey block (a filled table cell)
    assert not is_fundus_panel(flat, np.ones(flat.shape, bool))
    strip = np.full((40, 400), 120, np.uint8)  # a bold heading
    assert not is_fundus_panel(strip, np.ones(strip.shape, bool))
    half = frame[:, :40]  # a sliver cut off a photo
    assert not is_fundus_panel(half, fov[:, :40])


@pytest.mark.parametrize("seed", range(4))
def test_disc_side_gives_the_eye_with_a_confidence(seed):
    rng = np.random.default_rng(seed)
    for eye in ("OD", "OS"):
        img = angiogram(eye, "FFA" if seed % 2 else "ICGA", float(rng.integers(10, 900)), rng, 160)
        found, confidence = disc_side_eye(img, fov_mask(img))
        assert found == eye and 0 < confidence <= 1
    flat = np.where(_circle(160), 80, 0).astype(np.uint8)
    assert disc_side_eye(flat, _circle(160)) == (None, 0.0)


def _lab(text: str, rect=(0.0, 0.0, 10.0, 10.0)) -> Label:
    lab = make_label(text, 0.99, rect)
    assert lab is not None
    return lab


def test_the_printed_eye_comes_first_and_the_disc_only_breaks_ties():
    # a label beats a confident disc that disagrees (a bright lesion can pose as the disc)
    pf = panel_fields([(0.05, _lab("OD FA 0:19"))], ("OS", 0.9), None, "FFA")
    assert (pf.eye, pf.eye_review, pf.disc_agrees, pf.frame_time) == ("OD", False, False, 19.0)
    pf = panel_fields([(0.05, _lab("右眼 OD FA 0:19"))], ("OD", 0.9), None, "FFA")
    assert (pf.eye, pf.eye_source, pf.disc_agrees) == ("OD", "label+disc", True)
    # nothing printed: the disc proposes, a person decides
    pf = panel_fields([], ("OS", 1.0), None, "ICGA")
    assert (pf.eye, pf.eye_source, pf.eye_review) == ("OS", "disc", True)
    # the page's eye decides when no label is near, unless a confident disc contradicts it
    assert panel_fields([], ("OD", 0.9), "OD", "FFA").eye_review is False
    assert panel_fields([], ("OS", 0.9), "OD", "FFA").eye_review is True
    # two eyes written equally near: a confident disc breaks the tie, an unsure one sends it to review
    both = [(0.1, _lab("OD 0:30")), (0.1, _lab("OS 0:31"))]
    assert panel_fields(both, ("OS", 0.8), None, "FFA").eye == "OS"
    assert panel_fields(both, ("OS", 0.2), None, "FFA").eye_review is True
    assert panel_fields([(0.1, _lab("OS 0:31"))], (None, 0), None, "FFA+ICGA").modality is None
    assert panel_fields([(0.1, _lab("ICGA 5:10"))], (None, 0), "OD", "FFA+ICGA").modality == "ICGA"


def test_labels_go_to_the_nearest_panel_beside_below_or_above():
    left, right = (50.0, 400.0, 230.0, 580.0), (320.0, 400.0, 500.0, 580.0)
    beside = _lab("OD 2:16", (236.0, 480.0, 290.0, 492.0))  # printed just right of the left panel
    below_right = _lab("OS 0:49", (330.0, 370.0, 390.0, 382.0))
    above_left = _lab("OD 0:19", (60.0, 590.0, 110.0, 602.0))
    between = _lab("OS 9:00", (265.0, 480.0, 285.0, 492.0))  # as near to both: nobody's
    far = _lab("OD 1:00", (50.0, 50.0, 90.0, 62.0))
    near = assign_labels([beside, below_right, above_left, between, far], [left, right])
    assert [lab.text for _, lab in near[0]] == ["OD 2:16", "OD 0:19"]
    assert [lab.text for _, lab in near[1]] == ["OS 0:49"]


def test_frame_order_is_by_time_then_page_then_position():
    frames = [(300.0, 2, (50, 100, 200, 250)), (None, 1, (50, 500, 200, 650)), (32.0, 1, (300, 500, 450, 650)),
              (32.0, 1, (50, 500, 200, 650)), (32.0, 1, (50, 200, 200, 350))]
    ordered = sorted(frames, key=lambda f: frame_order_key(*f))
    assert ordered == [frames[3], frames[2], frames[4], frames[0], frames[1]]


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
        assert res.error is None and len(res.reports) == 1
        [rep] = res.reports
        pairs = match_truth(rep.frames, truth.frames)
        assert len(pairs) == len(truth.frames) == len(rep.frames), name
        for fr, tf in pairs:
            assert (fr.modality, fr.frame_time) == (tf.modality, tf.time_s), name
            assert fr.eye == tf.eye or "ambiguous_eye" in fr.reasons, name  # never wrong silently
        assert rep.label == truth.label
        assert rep.exam_date == truth.exam_date != truth.birth_date
    assert results["b_zh.pdf"].reports[0].reasons == ["unknown_diagnosis"]  # never guessed
    # the same patient in two reports meets under the same keyed hash, a different one does not
    keys = {n: r.reports[0].patient_key for n, r in results.items()}
    assert keys["a_en.pdf"] == keys["c_scan.pdf"] != keys["b_zh.pdf"]


def test_no_planted_phi_survives_in_output_images_or_text(corpus, processed):
    from PIL import Image

    out, results = processed
    files = sorted((out / "images").glob("*.png"))
    frames = [fr for r in results.values() for rep in r.reports for fr in rep.frames]
    assert len(files) == len(frames) == sum(len(t.frames) for t in corpus["truths"].values())
    assert not list((out / "quarantine").glob("*.png"))
    phi = {p for t in corpus["truths"].values() for p in t.phi}
    squash = lambda s: re.sub(r"\s+", "", s).lower()  # noqa: E731
    for f in files:
        assert re.fullmatch(r"[0-9a-f]{16}\.png", f.name)
        text = squash(ocr_text(f))
        assert not [p for p in phi if squash(p) in text], f
        with Image.open(f) as im:
            assert not {k for k in im.info if k not in ("dpi", "gamma")}  # no text chunks
    kept = " ".join(rep.diagnosis or "" for r in results.values() for rep in r.reports)
    kept += " ".join(str(fr.__dict__) for fr in frames)
    assert not [p for p in phi if squash(p) in squash(kept)]
