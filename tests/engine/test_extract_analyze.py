from __future__ import annotations

import hashlib
import io
import json
from datetime import date

import numpy as np
import pytest

from clearmamba.engine.analyze import (
    Vocabulary,
    analyze_text,
    find_diagnosis,
    header_fields,
    load_vocabulary,
    normalize,
    parse_date,
    parse_eye,
    parse_frame_time,
    parse_modality,
)
from clearmamba.engine.extract import BadPdfError, Limits, extract, photo_regions
from tests.engine.helpers import rect_iou


@pytest.mark.parametrize(
    "text,eye",
    [
        ("Eye: OD", "OD"),
        ("右眼 晚期", "OD"),
        ("left eye, late phase", "OS"),
        ("左眼 OS FA 0:19", "OS"),
        ("眼别: 双眼", "OU"),
        ("OD and OS", "OU"),
        ("Diagnosis: normal", None),
        ("ZHANG WEI ID:1234567", None),
    ],
)
def test_parse_eye(text, eye):
    assert parse_eye(text) == eye


@pytest.mark.parametrize(
    "text,mod",
    [
        ("Fundus fluorescein angiography (FFA)", "FFA"),
        ("荧光素眼底血管造影", "FFA"),
        ("FA 0:32", "FFA"),
        ("吲哚菁绿脉络膜血管造影 (ICGA)", "ICGA"),
        ("ICG 5:10", "ICGA"),
        ("FFA + ICGA", "FFA+ICGA"),
        ("OCT", None),
    ],
)
def test_parse_modality(text, mod):
    assert parse_modality(text) == mod


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("0:32", 32.0),
        ("FA 00:32.5", 32.5),
        ("5'10\"", 310.0),
        ("12'03''", 723.0),
        ("5分10秒", 310.0),
        ("OD 45s", 45.0),
        ("2023-05-12 10:32", None),
        ("no time here", None),
        ("0:75", None),
    ],
)
def test_parse_frame_time(text, seconds):
    assert parse_frame_time(text) == seconds


def test_parse_date_and_normalize():
    assert parse_date("检查日期：2023年5月12日") == date(2023, 5, 12)
    assert parse_date("Exam date: 2021/11/03") == date(2021, 11, 3)
    assert parse_date("2021-02-30") is None
    # OCR engines put spaces between CJK characters; full-width punctuation becomes ASCII
    assert normalize("诊 断 ： 糖 尿 病") == "诊断 : 糖尿病"


def test_vocabulary_maps_synonyms_and_refuses_to_guess():
    v = load_vocabulary(None)
    assert v.match("Branch retinal vein occlusion (BRVO)") == ("retinal_vein_occlusion", None)
    assert v.match("糖 尿 病 视 网 膜 病 变") == ("diabetic_retinopathy", None)  # OCR spacing
    assert v.match("PDR OU") == ("diabetic_retinopathy", None)
    assert v.match("未见明显异常") == ("normal", None)
    assert v.match("Retinitis pigmentosa") == (None, "unknown_diagnosis")
    assert v.match("CSC with CNV") == (None, "ambiguous_diagnosis")
    assert v.match("no diabetic retinopathy") == (None, "uncertain_diagnosis")
    assert v.match("疑似葡萄膜炎") == (None, "uncertain_diagnosis")
    assert v.match("") == (None, "no_diagnosis")
    # 'DR' is a whole-word synonym: it must not fire inside another word
    assert v.match("DRUSEN") == (None, "unknown_diagnosis")


def test_load_vocabulary_yaml_json_and_errors(tmp_path):
    (tmp_path / "v.yaml").write_text("leakage:\n  - leak\n  - 渗漏\nstaining: [stain]\n", encoding="utf-8")
    v = load_vocabulary(tmp_path / "v.yaml")
    assert v.match("late 渗 漏") == ("leakage", None)
    (tmp_path / "v.json").write_text(json.dumps({"a": ["alpha"]}))
    assert load_vocabulary(tmp_path / "v.json").match("Alpha") == ("a", None)
    (tmp_path / "bad.json").write_text(json.dumps({"a": "alpha"}))
    with pytest.raises(ValueError, match=r"bad\.json.*label 'a'.*list"):
        load_vocabulary(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="missing.yaml"):
        load_vocabulary(tmp_path / "missing.yaml")


def test_header_fields_and_diagnosis():
    lines = [
        "Name: ZHANG WEI   Patient ID: 3432265651",
        "DOB: 1986-01-15   Phone: 134-1273-4011",
        "Diagnosis: Posterior uveitis",
    ]
    assert header_fields(lines) == {
        "name": "ZHANG WEI",
        "id": "3432265651",
        "phone": "134-1273-4011",
        "dob": "1986-01-15",
    }
    assert find_diagnosis(lines) == "Posterior uveitis"
    zh = ["姓名：杨磊   病历号：3432265651", "诊断：葡萄膜炎", "眼别: 右眼", "检查日期: 2020-09-07"]
    fields = analyze_text(zh, Vocabulary({"uveitis": ["葡萄膜炎"]}))
    assert (fields.label, fields.eye, fields.exam_date) == ("uveitis", "OD", date(2020, 9, 7))
    assert fields.phi == {"name": "杨磊", "id": "3432265651"}


def test_embedded_image_is_pixel_exact_with_position(tmp_path):
    from PIL import Image
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    img = np.random.default_rng(0).integers(0, 256, (90, 130), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    buf.seek(0)
    c = canvas.Canvas(str(tmp_path / "x.pdf"))
    c.drawString(72, 700, "Caption 0:32")
    c.drawImage(ImageReader(buf), 100, 300, width=260, height=180)  # drawn at 2x: extraction must ignore that
    c.save()
    ex = extract(tmp_path / "x.pdf")
    assert len(ex.images) == 1
    np.testing.assert_array_equal(ex.images[0].pixels, img)
    assert ex.images[0].rect == pytest.approx((100, 300, 360, 480), abs=0.01)
    assert ex.lines[0].text == "Caption 0:32"


def test_extract_born_digital_reports(corpus):
    en = extract(corpus["reports"] / "a_en.pdf")
    assert en.n_pages == 2 and en.scanned_pages == []
    assert [im.page for im in en.images] == [1, 2, 2]
    assert en.images[0].pixels.shape == (192 + 48, 2 * 192 + 16)  # native, not the 400 pt placement
    truth = corpus["truths"]["a_en.pdf"]
    assert any("Diagnosis:" in ln.text for ln in en.lines)
    assert rect_iou(en.images[1].rect, truth.frames[2].bbox) > 0.7
    zh = extract(corpus["reports"] / "b_zh.pdf")
    assert any("诊断" in ln.text for ln in zh.lines)
    assert any(ln.text.startswith("姓名") for ln in zh.lines)


def test_extract_scanned_report_uses_ocr(corpus):
    from clearmamba.engine.ocr import get_ocr

    path = corpus["reports"] / "c_scan.pdf"
    with pytest.raises(BadPdfError, match="scan and no OCR"):
        extract(path)
    ex = extract(path, ocr=get_ocr())
    assert ex.scanned_pages == [1, 2]
    assert all(im.scanned for im in ex.images) and len(ex.images) == 3
    diag = find_diagnosis([ln.text for ln in ex.lines])
    assert diag is not None and "central serous" in diag.lower()
    truth = corpus["truths"]["c_scan.pdf"]
    assert (
        rect_iou(ex.images[0].rect, (50, truth.frames[0].bbox[1] - 20, 450, truth.frames[0].bbox[3] + 20))
        > 0.7
    )


def test_photo_regions_finds_dark_photos_on_paper():
    page = np.full((400, 300), 240, np.uint8)
    page[50:150, 30:200] = 10
    page[200:380, 100:280] = 20
    page[20:28, 30:250] = 0  # a line of text: too thin to be a photo
    assert photo_regions(page) == [(30, 50, 200, 150), (100, 200, 280, 380)]


@pytest.mark.parametrize("kind", ["encrypted", "truncated", "not_pdf", "bomb", "huge_page"])
def test_bad_pdfs_raise_named_errors_and_stay_untouched(corpus, kind):
    path = corpus["bad"][kind]
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(BadPdfError) as info:
        extract(path, limits=Limits())
    assert info.value.kind == {"huge_page": "bomb"}.get(kind, kind)
    assert str(path) in str(info.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
