"""Realistic synthetic angiography reports for tests and benchmarks: English and Chinese PDFs with a patient
header, burned-in names/IDs on the images, two-eye composites, single frames with time stamps, born-digital or
scanned (one JPEG per page). Every planted PHI string and every true field is returned as ground truth.

Chinese glyphs inside images and scanned pages need a CJK font file (Debian ``fonts-wqy-microhei``);
without one, image labels fall back to Latin and Chinese reports stay born-digital (text layer via
reportlab's built-in ``STSong-Light`` CID font, which needs no file)."""

from __future__ import annotations

import io
import json
import zlib
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np

CJK_FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)
LATIN_FONT_CANDIDATES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)

SURNAMES = [
    ("ZHANG", "张"),
    ("WANG", "王"),
    ("LI", "李"),
    ("ZHAO", "赵"),
    ("CHEN", "陈"),
    ("LIU", "刘"),
    ("YANG", "杨"),
    ("HUANG", "黄"),
    ("ZHOU", "周"),
    ("WU", "吴"),
]
GIVEN = [
    ("WEI", "伟"),
    ("FANG", "芳"),
    ("NA", "娜"),
    ("MIN", "敏"),
    ("JING", "静"),
    ("QIANG", "强"),
    ("LEI", "磊"),
    ("YANG", "洋"),
    ("YONG", "勇"),
    ("JUN", "军"),
    ("TAO", "涛"),
    ("MING", "明"),
]
# (label, English text, Chinese text); label None = not in the default vocabulary, must go to review
DIAGNOSES = [
    ("diabetic_retinopathy", "Diabetic retinopathy", "糖尿病视网膜病变"),
    ("retinal_vein_occlusion", "Branch retinal vein occlusion (BRVO)", "视网膜分支静脉阻塞"),
    ("central_serous", "Central serous chorioretinopathy", "中心性浆液性脉络膜视网膜病变"),
    ("amd", "Age-related macular degeneration with CNV", "年龄相关性黄斑变性"),
    ("pcv", "Polypoidal choroidal vasculopathy", "息肉状脉络膜血管病变"),
    ("uveitis", "Posterior uveitis", "葡萄膜炎"),
    ("normal", "No abnormality detected", "未见明显异常"),
    (None, "Retinitis pigmentosa", "视网膜色素变性"),
    (None, "Coats disease", "外层渗出性视网膜病变"),
]


@lru_cache(maxsize=1)
def cjk_font_path() -> str | None:
    """A CJK-capable font file on this machine, or None."""
    return next((p for p in CJK_FONT_CANDIDATES if Path(p).exists()), None)


@lru_cache(maxsize=8)
def _font(size: int, cjk: bool):
    from PIL import ImageFont

    path = cjk_font_path() if cjk else None
    path = path or cjk_font_path() or next((p for p in LATIN_FONT_CANDIDATES if Path(p).exists()), None)
    return ImageFont.truetype(path, size) if path else ImageFont.load_default(size)


def angiogram(
    eye: str, modality: str, time_s: float, rng: np.random.Generator, size: int = 192
) -> np.ndarray:
    """A grey angiogram frame: circular field, optic disc on the nasal side (image-right for OD), vessels
    arching temporally, a few bright lesions. Brightness rises with time after injection."""
    import cv2

    img = np.zeros((size, size), np.float32)
    c, r = size / 2, size * 0.46
    fov = np.zeros_like(img)
    cv2.circle(fov, (int(c), int(c)), int(r), 1.0, -1)
    phase = min(time_s / 60.0, 1.0)
    base = (30 + 40 * phase) if modality == "FFA" else (45 + 20 * phase)
    img += fov * base
    side = 1 if eye == "OD" else -1
    disc = (int(c + side * 0.45 * r), int(c + rng.uniform(-0.05, 0.05) * r))
    vessel = 150 + 60 * phase if modality == "FFA" else 120
    for k in range(6):
        pts = [disc]
        x, y = disc
        heading = (np.pi if side == 1 else 0.0) + (k - 2.5) * 0.45  # towards the temporal side
        for _ in range(14):
            heading += rng.normal(0, 0.18)
            x, y = x + np.cos(heading) * size * 0.05, y + np.sin(heading) * size * 0.05
            pts.append((int(x), int(y)))
        cv2.polylines(img, [np.array(pts, np.int32)], False, vessel, max(1, size // 90) + (k % 2))
    cv2.circle(img, disc, int(size * 0.07), 235, -1)
    for _ in range(int(rng.integers(2, 7))):
        p = (int(c + rng.uniform(-0.5, 0.5) * r), int(c + rng.uniform(-0.5, 0.5) * r))
        cv2.circle(img, p, int(rng.integers(2, 5)), 200, -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.2) * fov
    img += rng.normal(0, 3, img.shape) * fov
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_text(img: np.ndarray, xy: tuple[int, int], text: str, size: int = 14) -> np.ndarray:
    from PIL import Image, ImageDraw

    pil = Image.fromarray(img)
    cjk = any(ord(ch) > 0x2E80 for ch in text)
    ImageDraw.Draw(pil).text(xy, text, font=_font(size, cjk), fill=255)
    return np.asarray(pil).copy()


def _eye_label(eye: str, zh: bool) -> str:
    if zh and cjk_font_path():
        return "右眼 OD" if eye == "OD" else "左眼 OS"
    return eye


def _clock(t: float) -> str:
    return f"{int(t // 60)}:{int(t % 60):02d}"


@dataclass
class FrameTruth:
    page: int
    bbox: tuple[float, float, float, float]  # PDF points, x0 y0 x1 y1 with y up
    eye: str
    modality: str
    time_s: float


@dataclass
class ReportTruth:
    file: str
    language: str
    scanned: bool
    modality: str
    label: str | None
    diagnosis: str
    patient_id: str
    phi: list[str]
    frames: list[FrameTruth] = field(default_factory=list)


def _patient(rng: np.random.Generator) -> dict:
    s, g = SURNAMES[rng.integers(len(SURNAMES))], GIVEN[rng.integers(len(GIVEN))]
    dob = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 60 * 365)))
    exam = date(2019, 1, 1) + timedelta(days=int(rng.integers(0, 5 * 365)))
    return {
        "name_en": f"{s[0]} {g[0]}",
        "name_zh": s[1] + g[1],
        "id": str(int(rng.integers(10**9, 10**10))),
        "phone": f"13{rng.integers(0, 10)}-{rng.integers(1000, 10000)}-{rng.integers(1000, 10000)}",
        "dob": dob.isoformat(),
        "exam": exam.isoformat(),
        "clock": f"{rng.integers(8, 18)}:{rng.integers(10, 60)}",
    }


@dataclass(frozen=True)
class Style:
    """Harder reports: eye labels left off some panels (the disc or the page decides), images embedded as
    lossy JPEG (ringing around burned-in text)."""

    label_dropout: float = 0.0
    jpeg_quality: int | None = None

    def drop(self, rng: np.random.Generator) -> bool:
        return self.label_dropout > 0 and rng.random() < self.label_dropout  # no draw: standard stays stable


def _png(img: np.ndarray, jpeg_quality: int | None = None):
    from PIL import Image
    from reportlab.lib.utils import ImageReader

    buf = io.BytesIO()
    if jpeg_quality:
        Image.fromarray(img).save(buf, "JPEG", quality=jpeg_quality)
    else:
        Image.fromarray(img).save(buf, "PNG")
    buf.seek(0)
    return ImageReader(buf)


def _register_cjk() -> str:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont

    if "STSong-Light" not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    return "STSong-Light"


def write_report(
    path: Path,
    rng: np.random.Generator,
    zh: bool,
    modality: str,
    diag: tuple,
    patient: dict,
    size: int = 192,
    style: Style = Style(),  # noqa: B008 (frozen)
) -> ReportTruth:
    """Two pages: page 1 header + a two-eye composite with burned-in PHI; page 2 two single-eye frames."""
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    font = _register_cjk() if zh else "Helvetica"
    mod_text = (
        ("荧光素眼底血管造影 (FFA)" if modality == "FFA" else "吲哚菁绿脉络膜血管造影 (ICGA)")
        if zh
        else (
            "Fundus fluorescein angiography (FFA)"
            if modality == "FFA"
            else "Indocyanine green angiography (ICGA)"
        )
    )
    tag = "FA" if modality == "FFA" else "ICGA"
    p = patient
    name = p["name_zh"] if zh else p["name_en"]
    header = [
        ("眼底血管造影报告" if zh else "Fundus Angiography Report"),
        (f"姓名: {name}   病历号: {p['id']}" if zh else f"Name: {name}   Patient ID: {p['id']}"),
        (f"出生日期: {p['dob']}   电话: {p['phone']}" if zh else f"DOB: {p['dob']}   Phone: {p['phone']}"),
        (
            f"检查日期: {p['exam']}   检查项目: {mod_text}"
            if zh
            else f"Exam date: {p['exam']}   Exam: {mod_text}"
        ),
        ("眼别: 双眼" if zh else "Eye: OU"),
    ]
    truth = ReportTruth(
        path.name,
        "zh" if zh else "en",
        False,
        modality,
        diag[0],
        diag[2] if zh else diag[1],
        p["id"],
        [p["name_en"], p["name_zh"], p["id"], p["phone"], p["dob"], p["exam"]],
    )
    c = canvas.Canvas(str(path), pagesize=A4, invariant=1)
    c.setTitle("report")
    y = 800
    for i, line in enumerate(header):
        c.setFont(font, 15 if i == 0 else 11)
        c.drawString(50, y, line)
        y -= 22
    # page 1: composite, eyes in random order, PHI bar on top, labels + timers below each panel
    gap, bar = 16, 24
    order = ["OD", "OS"] if rng.random() < 0.7 else ["OS", "OD"]
    t1 = float(rng.integers(15, 60))
    comp = np.zeros((size + 2 * bar, 2 * size + gap), np.uint8)
    for k, eye in enumerate(order):
        comp[bar : bar + size, k * (size + gap) : k * (size + gap) + size] = angiogram(
            eye, modality, t1 + k, rng, size
        )
        label = "" if style.drop(rng) else _eye_label(eye, zh)
        comp = _draw_text(comp, (k * (size + gap) + 6, bar + size + 4), f"{label}  {tag} {_clock(t1 + k)}")
    comp = _draw_text(comp, (6, 4), f"{p['name_en']} ID:{p['id']} {p['exam']} {p['clock']}")
    w_pt = 400.0
    h_pt = w_pt * comp.shape[0] / comp.shape[1]
    x0, y0 = 50.0, y - 10 - h_pt
    c.drawImage(_png(comp, style.jpeg_quality), x0, y0, width=w_pt, height=h_pt)
    scale = w_pt / comp.shape[1]
    for k, eye in enumerate(order):
        px = k * (size + gap)
        truth.frames.append(
            FrameTruth(
                1,
                (x0 + px * scale, y0 + bar * scale, x0 + (px + size) * scale, y0 + (bar + size) * scale),
                eye,
                modality,
                t1 + k,
            )
        )
    c.setFont(font, 11)
    y = y0 - 30
    c.drawString(50, y, ("所见: 见图。" if zh else "Findings: see images."))
    c.drawString(50, y - 20, (f"诊断: {diag[2]}" if zh else f"Diagnosis: {diag[1]}"))
    c.drawString(50, y - 60, ("报告医生: 签名" if zh else "Reporting physician: signed"))
    c.showPage()
    # page 2: two single-eye late frames, each with a PHI strip on top and a label/timer strip below
    eye = order[int(rng.integers(2))]
    c.setFont(font, 11)
    c.drawString(50, 800, (f"{'右眼' if eye == 'OD' else '左眼'} 晚期" if zh else f"{eye} late phase"))
    for k in range(2):
        t = float(rng.integers(120, 900)) + 300 * k
        frame = np.zeros((size + 2 * bar, size), np.uint8)
        frame[bar : bar + size] = angiogram(eye, modality, t, rng, size)
        frame = _draw_text(frame, (4, 4), f"ID:{p['id']}")
        label = "" if style.drop(rng) else _eye_label(eye, zh)
        frame = _draw_text(frame, (4, bar + size + 4), f"{label} {_clock(t)}")
        fw = 230.0
        fh = fw * frame.shape[0] / frame.shape[1]
        fx, fy = 50.0 + k * (fw + 20), 760 - fh
        c.drawImage(_png(frame, style.jpeg_quality), fx, fy, width=fw, height=fh)
        s = fw / frame.shape[1]
        c.drawString(fx + 4, fy - 14, f"{int(t // 60)}'{int(t % 60):02d}\"")
        truth.frames.append(
            FrameTruth(2, (fx, fy + bar * s, fx + fw, fy + (bar + size) * s), eye, modality, t)
        )
    c.showPage()
    c.save()
    return truth


def rasterize(path: Path, dpi: int = 110, rng: np.random.Generator | None = None) -> None:
    """Replace a PDF by a 'scan' of itself: each page one noisy grey JPEG filling the page, no text layer."""
    import pypdfium2 as pdfium
    from PIL import Image
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    rng = rng or np.random.default_rng(0)
    pdf = pdfium.PdfDocument(path.read_bytes())
    pages = []
    for page in pdf:
        w, h = page.get_size()
        gray = np.asarray(page.render(scale=dpi / 72, grayscale=True).to_pil().convert("L"), np.float32)
        gray = np.clip(gray + rng.normal(0, 4, gray.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(gray).save(buf, "JPEG", quality=85)
        buf.seek(0)
        pages.append((w, h, ImageReader(buf)))
    pdf.close()
    c = canvas.Canvas(str(path), invariant=1)
    for w, h, img in pages:
        c.setPageSize((w, h))
        c.drawImage(img, 0, 0, width=w, height=h)
        c.showPage()
    c.save()


def generate_reports(
    out_dir: str | Path,
    n: int,
    seed: int = 0,
    scanned_fraction: float = 0.15,
    unknown_fraction: float = 0.1,
    size: int = 192,
    style: Style = Style(),  # noqa: B008 (frozen)
) -> list[ReportTruth]:
    """Write ``n`` reports to ``out_dir`` plus ``truth.json``; patients recur (about 1 report in 3)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    known = [d for d in DIAGNOSES if d[0]]
    unknown = [d for d in DIAGNOSES if not d[0]]
    patients: list[dict] = []
    truths = []
    for i in range(n):
        zh = i % 2 == 1
        if patients and rng.random() < 0.3:
            patient = dict(patients[int(rng.integers(len(patients)))])
            patient["exam"] = (date.fromisoformat(patient["exam"]) + timedelta(days=90)).isoformat()
        else:
            patient = _patient(rng)
            patients.append(patient)
        diag = (
            unknown[int(rng.integers(len(unknown)))]
            if rng.random() < unknown_fraction
            else known[int(rng.integers(len(known)))]
        )
        modality = "FFA" if rng.random() < 0.6 else "ICGA"
        path = out / f"report_{i:04d}.pdf"
        truth = write_report(path, rng, zh, modality, diag, patient, size, style)
        if rng.random() < scanned_fraction and (not zh or cjk_font_path()):
            rasterize(path, rng=rng)
            truth.scanned = True
        truths.append(truth)
    (out / "truth.json").write_text(json.dumps([asdict(t) for t in truths], ensure_ascii=False, indent=1))
    return truths


def write_bad_pdfs(out_dir: str | Path, good: Path) -> dict[str, Path]:
    """Broken inputs that a run must record and skip: encrypted, truncated, not a PDF, a decompression bomb
    (a 20000 x 20000 Flate image that decodes to 400 MB from a few hundred kB) and a huge page."""
    import pypdf

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    files = {}
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(data))
    writer.encrypt("secret-user-password")
    buf = io.BytesIO()
    writer.write(buf)
    files["encrypted"] = out / "bad_encrypted.pdf"
    files["encrypted"].write_bytes(buf.getvalue())
    files["truncated"] = out / "bad_truncated.pdf"
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["not_pdf"] = out / "bad_not_a.pdf"
    files["not_pdf"].write_bytes(b"<html>this is not a pdf</html>\n" * 10)
    side = 20000
    comp = zlib.compressobj(9)
    row = bytes(side)
    stream = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    files["bomb"] = out / "bad_bomb.pdf"
    files["bomb"].write_bytes(
        _raw_pdf(
            f"/Type /XObject /Subtype /Image /Width {side} /Height {side} "
            f"/ColorSpace /DeviceGray /BitsPerComponent 8 /Filter /FlateDecode",
            stream,
            media=(0, 0, 595, 842),
        )
    )
    files["huge_page"] = out / "bad_huge_page.pdf"
    files["huge_page"].write_bytes(
        _raw_pdf(
            "/Type /XObject /Subtype /Image /Width 1 /Height 1 /ColorSpace /DeviceGray /BitsPerComponent 8",
            b"\x00",
            media=(0, 0, 200000, 200000),
        )
    )
    return files


def _raw_pdf(image_dict: str, image_stream: bytes, media: tuple) -> bytes:
    """A minimal one-page PDF whose page paints one image over the whole media box, with a correct xref."""
    w, h = media[2], media[3]
    content = f"q {w} 0 0 {h} 0 0 cm /Im0 Do Q".encode()
    objs = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [{' '.join(map(str, media))}] "
            f"/Resources << /XObject << /Im0 4 0 R >> >> /Contents 5 0 R >>"
        ).encode(),
        f"<< {image_dict} /Length {len(image_stream)} >>\nstream\n".encode() + image_stream + b"\nendstream",
        f"<< /Length {len(content)} >>\nstream\n".encode() + content + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
