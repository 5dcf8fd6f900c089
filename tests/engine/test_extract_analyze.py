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
    load_vocabulary,
    normalize,
    parse_eye,
    parse_frame_time,
    parse_modality,
    segment_reports,
)
from clearmamba.engine.errors import VocabularyError
from clearmamba.engine.extract import BadPdfError, Limits, deskew, extract, photo_regions, skew_angle
from clearmamba.engine.phi import find_dates, header_fields, parse_date
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
        ("16.08.2019 12:58", None),  # a clock time beside a date in any format is not a frame time
        ("03/07/1985 9:30", None),
        ("2019年8月16日 12:58", None),
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


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1985/03/07", date(1985, 3, 7)),
        ("07.03.1985", date(1985, 3, 7)),  # European day.month.year
        ("13/07/1985", date(1985, 7, 13)),  # the day is the one above 12
        ("07/13/1985", date(1985, 7, 13)),
        ("03/07/1985", None),  # March or July: a date-like PHI string, never a guessed date
        ("1985年3月7日", date(1985, 3, 7)),
        ("7 Mar 1985", date(1985, 3, 7)),
        ("March 7, 1985", date(1985, 3, 7)),
        ("07/03/85", None),  # no century
    ],
)
def test_every_common_date_format_is_found(text, expected):
    found = find_dates(f"DOB: {text} ok")
    assert len(found) == 1 and found[0][1] == expected
    assert f"DOB: {text} ok"[slice(*found[0][0])] == text


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
    with pytest.raises(VocabularyError, match=r"--vocab .*bad\.json.*label 'a'.*list"):
        load_vocabulary(tmp_path / "bad.json")
    with pytest.raises(VocabularyError, match="missing.yaml.*expected a mapping"):
        load_vocabulary(tmp_path / "missing.yaml")


def test_header_fields_and_diagnosis():
    lines = [
        "Name: ZHANG WEI   Patient ID: 3432265651",
        "DOB: 1986-01-15   Phone: 134-1273-4011",
        "Diagnosis: Posterior uveitis",
    ]
    h = header_fields(lines)
    assert (h.names, h.ids, h.phones, h.birth_dates) == (["ZHANG WEI"], ["3432265651"], ["134-1273-4011"],
                                                         ["1986-01-15"])
    assert find_diagnosis(lines) == "Posterior uveitis"
    zh = ["姓名：杨磊   病历号：3432265651", "诊断：葡萄膜炎", "眼别: 右眼", "检查日期: 2020-09-07"]
    fields = analyze_text(zh, Vocabulary({"uveitis": ["葡萄膜炎"]}))
    assert (fields.label, fields.eye, fields.exam_date) == ("uveitis", "OD", date(2020, 9, 7))
    assert fields.header.names == ["杨磊"] and fields.header.patient_id == "3432265651"


@pytest.mark.parametrize(
    "line,name,pid",
    [
        ("Patient: WU MING   MRN: 1450154531", "WU MING", "1450154531"),
        ("Patient name: XU LEI Hospital No.: H3304019", "XU LEI", "H3304019"),
        ("Patient: WUMINGMRN: 1450154531", "WUMING", "1450154531"),  # OCR lost the space before the head
        ("患者: 黄芳  病案号: 1539855029", "黄芳", "1539855029"),
        ("姓名:黄芳门诊号:1539855029", "黄芳", "1539855029"),
        ("姓名: 李娜 住院号: 77889900", "李娜", "77889900"),
        ("姓名: 李娜 影像号: 556677", "李娜", "556677"),  # a record number head the list does not name
    ],
)
def test_every_name_and_id_head_form(line, name, pid):
    h = header_fields([line])
    assert h.names == [name] and h.ids == [pid]


def test_exam_date_only_from_a_labelled_exam_or_visit_date():
    birth_first = ["Name: LI NA  DOB: 07.03.1985", "Visit date: 16.08.2019   Exam: FFA"]
    assert analyze_text(birth_first, Vocabulary({})).exam_date == date(2019, 8, 16)
    # no labelled exam date: none at all, never the birth date or the first date in the text
    assert analyze_text(["Name: LI NA  DOB: 07.03.1985", "Seen 2019-08-16"], Vocabulary({})).exam_date is None
    zh = ["出生日期: 1985年3月7日", "就诊日期: 2019年8月16日"]
    assert analyze_text(zh, Vocabulary({})).exam_date == date(2019, 8, 16)
    # an uncertain day/month order is not stored either
    assert analyze_text(["Exam date: 03/07/2019"], Vocabulary({})).exam_date is None


def test_a_new_header_block_starts_a_new_report():
    pages = {
        1: ["Name: A B   MRN: 12345678", "Exam date: 2020-01-01"],
        2: ["OD late phase"],
        3: ["Name: A B   MRN: 1234567"],  # the same patient, one digit lost by OCR: the same report
        4: ["Name: C D   MRN: 99999999"],
        5: ["Name: C D   MRN: 99999999", "Exam date: 2021-03-04"],
        6: ["Name: C D   MRN: 99999999", "Exam date: 2021-06-04"],  # the same patient, another exam
    }
    assert segment_reports(pages) == [[1, 2, 3], [4, 5], [6]]
    assert segment_reports({1: ["no header"], 2: ["Name: A B  ID: 12345678"]}) == [[1, 2]]


def test_deskew_finds_the_angle_of_a_turned_page():
    import cv2

    page = np.full((900, 640), 240, np.uint8)
    page[150:400, 60:560] = 15  # a photo
    for y in range(450, 800, 30):
        page[y : y + 8, 60:500] = 40  # text lines
    for angle in (-4.0, -2.0, 2.5, 5.0):
        m = cv2.getRotationMatrix2D((320, 450), angle, 1.0)
        turned = cv2.warpAffine(page, m, (640, 900), borderValue=255)
        upright, used = deskew(turned)
        assert used == pytest.approx(-angle, abs=0.3)
        assert abs(skew_angle(upright)) < 0.3


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
    assert [im.page for im in en.images] == [1, 2, 2]  # the standard style: a composite and two singles
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
    truth = corpus["truths"]["c_scan.pdf"]
    assert ex.scanned_pages == [1, 2]
    # the composite on page 1, then every single frame (their photographs, not page fragments)
    assert all(im.scanned for im in ex.images) and len(ex.images) == 1 + sum(f.page == 2 for f in truth.frames)
    diag = find_diagnosis([ln.text for ln in ex.lines])
    assert diag is not None and "central serous" in diag.lower()
    assert (
        rect_iou(ex.images[0].rect, (50, truth.frames[0].bbox[1] - 20, 450, truth.frames[0].bbox[3] + 20))
        > 0.7
    )


def test_photo_regions_finds_dark_photos_on_paper():
    page = np.full((400, 300), 240, np.uint8)
    page[50:150, 30:200] = 10
    page[200:380, 100:280] = 20
    page[20:28, 30:250] = 0  # a line of text: too thin to be a photo
    regions = photo_regions(page)
    assert [box for box, _ in regions] == [(30, 50, 200, 150), (100, 200, 280, 380)]
    assert all(mask.mean() > 0.99 for _, mask in regions)  # an upright photo: all of its box


def test_photo_regions_mask_the_paper_around_a_turned_photo():
    import cv2

    page = np.full((400, 400), 240, np.uint8)
    cv2.fillConvexPoly(page, cv2.boxPoints(((200, 200), (220, 140), 8.0)).astype(np.int32), 10)
    [(box, mask)] = photo_regions(page)
    x0, y0, x1, y1 = box
    crop = page[y0:y1, x0:x1]
    assert (crop[mask] < 110).mean() > 0.97 and (crop[~mask] > 200).mean() > 0.97  # paper left out
    assert mask.sum() == pytest.approx(220 * 140, rel=0.03)  # the photo itself, not its bounding box


@pytest.mark.parametrize("kind", ["encrypted", "truncated", "not_pdf", "bomb", "huge_page"])
def test_bad_pdfs_raise_named_errors_and_stay_untouched(corpus, kind):
    path = corpus["bad"][kind]
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(BadPdfError) as info:
        extract(path, limits=Limits())
    assert info.value.kind == {"huge_page": "bomb"}.get(kind, kind)
    assert str(path) in str(info.value)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
