"""Synthetic angiography report PDFs with their ground truth, for tests and benchmarks.

English and Chinese reports with a patient header, burned-in names/IDs/dates on the images, two-eye composites
and single frames with time labels (burned in, in a caption under the image, or printed beside it), born-digital
or scanned. :data:`STANDARD` is a clean archive; :data:`HARD` is what hospitals actually keep: scans rotated
2-5 degrees and saved as JPEG quality 25-40, PHI burned bottom-right, vertically along the left edge or over the
retina, every ID prefix and date format, eye labels left off, two patients in one PDF, 3-8 frames a report.
Every planted PHI string and every true field is returned (and written to ``truth.json``).

Fonts never come from the system (see :mod:`clearmamba.testing.fonts`), so a corpus is the same on every machine
for the same seed.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from clearmamba.testing.fonts import is_cjk, register_pdf_fonts
from clearmamba.testing.images import angiogram, draw_text, encode_image, text_size

SURNAMES = [("ZHANG", "张"), ("WANG", "王"), ("LI", "李"), ("ZHAO", "赵"), ("CHEN", "陈"), ("LIU", "刘"),
            ("YANG", "杨"), ("HUANG", "黄"), ("ZHOU", "周"), ("WU", "吴"), ("XU", "徐"), ("SUN", "孙")]
GIVEN = [("WEI", "伟"), ("FANG", "芳"), ("NA", "娜"), ("MIN", "敏"), ("JING", "静"), ("QIANG", "强"),
         ("LEI", "磊"), ("YANG", "洋"), ("YONG", "勇"), ("JUN", "军"), ("TAO", "涛"), ("MING", "明")]
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
# header heads in use (the engine must know every one of them)
NAME_HEADS = {"en": ["Name", "Patient", "Patient name"], "zh": ["姓名", "患者"]}
ID_HEADS = {"en": ["Patient ID", "MRN", "ID", "Hospital No."], "zh": ["病历号", "住院号", "门诊号", "病案号", "ID号"]}
DOB_HEADS = {"en": ["DOB", "Date of birth", "Birth date"], "zh": ["出生日期"]}
EXAM_HEADS = {"en": ["Exam date", "Date of exam", "Visit date"], "zh": ["检查日期", "就诊日期"]}
DATE_FORMATS = ("iso", "ymd_slash", "dmy_dot", "mdy_slash", "zh")
PHI_POSITIONS = ("top", "bottom_right", "left_vertical", "in_field")
LABEL_LAYOUTS = ("burned", "caption", "beside")
CHINESE_STRINGS = [
    "眼底血管造影报告", "荧光素眼底血管造影 (FFA)", "吲哚菁绿脉络膜血管造影 (ICGA)", "电话", "眼别: 双眼",
    "所见: 见图。", "诊断", "报告医生: 签名", "右眼", "左眼", "晚期", "早期",
]


def format_date(d: date, fmt: str) -> str:
    return {
        "iso": f"{d.year:04d}-{d.month:02d}-{d.day:02d}",
        "ymd_slash": f"{d.year:04d}/{d.month:02d}/{d.day:02d}",
        "dmy_dot": f"{d.day:02d}.{d.month:02d}.{d.year:04d}",
        "mdy_slash": f"{d.month:02d}/{d.day:02d}/{d.year:04d}",
        "zh": f"{d.year}年{d.month}月{d.day}日",
    }[fmt]


def clock(t: float) -> str:
    return f"{int(t // 60)}:{int(t % 60):02d}"


@dataclass(frozen=True)
class Style:
    """How hard the generated archive is; every field has the clean value by default."""

    name: str = "standard"
    label_dropout: float = 0.0  # eye labels left off panels (the page context or nothing decides)
    image_jpeg_quality: tuple[int, int] | None = None  # embedded images stored as JPEG in this range
    scan_rotation_deg: tuple[float, float] = (0.0, 0.0)  # scanned pages rotated by this much, either sign
    scan_jpeg_quality: tuple[int, int] = (85, 85)
    phi_positions: tuple[str, ...] = ("top",)
    date_formats: tuple[str, ...] = ("iso",)
    all_header_forms: bool = False  # name/ID/date heads drawn from every form in use, not the first
    two_patient_fraction: float = 0.0  # PDFs holding a second patient's report after the first
    frames: tuple[int, int] = (4, 4)  # frames per report (2 in the composite, the rest single)
    label_layouts: tuple[str, ...] = LABEL_LAYOUTS

    def pick(self, rng: np.random.Generator, options):
        return options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]


STANDARD = Style()
HARD = Style(name="hard", label_dropout=0.3, image_jpeg_quality=(40, 70), scan_rotation_deg=(2.0, 5.0),
             scan_jpeg_quality=(25, 40), phi_positions=PHI_POSITIONS, date_formats=DATE_FORMATS,
             all_header_forms=True, two_patient_fraction=0.2, frames=(3, 8))


@dataclass
class FrameTruth:
    page: int  # 1-based page of the PDF
    bbox: tuple[float, float, float, float]  # the angiogram's square, PDF points, x0 y0 x1 y1 with y up
    eye: str
    modality: str
    time_s: float
    eye_labelled: bool  # an eye label was printed next to this panel
    label_layout: str


@dataclass
class ReportTruth:
    file: str
    index: int  # 0 for the first report in the PDF, 1 for a second patient's
    pages: list[int]
    language: str
    scanned: bool
    modality: str
    label: str | None
    diagnosis: str
    patient_id: str
    exam_date: str  # ISO
    birth_date: str  # ISO; must never be stored as the exam date
    phi: list[str]  # every identifying string printed anywhere (text layer or burned in)
    frames: list[FrameTruth] = field(default_factory=list)


@dataclass
class Patient:
    name_en: str
    name_zh: str
    id: str
    phone: str
    dob: date
    exam: date
    clock: str


def make_patient(rng: np.random.Generator, alnum_id: bool = False) -> Patient:
    s, g = SURNAMES[rng.integers(len(SURNAMES))], GIVEN[rng.integers(len(GIVEN))]
    pid = str(int(rng.integers(10**7, 10**10)))
    if alnum_id:
        pid = "HABK"[int(rng.integers(4))] + pid[:8]
    return Patient(
        name_en=f"{s[0]} {g[0]}", name_zh=s[1] + g[1], id=pid,
        phone=f"13{rng.integers(0, 10)}-{rng.integers(1000, 10000)}-{rng.integers(1000, 10000)}",
        dob=date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 60 * 365))),
        exam=date(2019, 1, 1) + timedelta(days=int(rng.integers(0, 5 * 365))),
        clock=f"{rng.integers(8, 18)}:{rng.integers(10, 60)}",
    )


@dataclass
class _Plan:
    """Everything random about one report, drawn up front so the drawing code stays deterministic."""

    zh: bool
    modality: str
    diag: tuple
    patient: Patient
    date_fmt: str
    heads: dict
    phi_position: str
    jpeg: int | None


class _Writer:
    """Draws one or more reports into one PDF with reportlab, recording the truth as it goes."""

    def __init__(self, path: Path, rng: np.random.Generator, style: Style, size: int):
        from reportlab.lib.pagesizes import A4
        from reportlab.pdfgen import canvas

        self.path, self.rng, self.style, self.size = path, rng, style, size
        self.latin, self.cjk = register_pdf_fonts()
        self.page_w, self.page_h = A4
        self.c = canvas.Canvas(str(path), pagesize=A4, invariant=1)
        self.c.setTitle("report")
        self.page = 1

    def text(self, x: float, y: float, s: str, size: float = 11) -> None:
        self.c.setFont(self.cjk if is_cjk(s) else self.latin, size)
        self.c.drawString(x, y, s)

    def new_page(self) -> None:
        self.c.showPage()
        self.page += 1

    def image(self, img: np.ndarray, x: float, y: float, w: float, jpeg: int | None) -> float:
        from reportlab.lib.utils import ImageReader

        h = w * img.shape[0] / img.shape[1]
        self.c.drawImage(ImageReader(io.BytesIO(encode_image(img, jpeg))), x, y, width=w, height=h)
        return h

    def close(self) -> None:
        self.c.showPage()
        self.c.save()

    # ---- one report
    def plan(self, zh: bool, modality: str, diag: tuple, patient: Patient) -> _Plan:
        st, rng = self.style, self.rng
        lang = "zh" if zh else "en"
        heads = {k: (st.pick(rng, v[lang]) if st.all_header_forms else v[lang][0])
                 for k, v in (("name", NAME_HEADS), ("id", ID_HEADS), ("dob", DOB_HEADS), ("exam", EXAM_HEADS))}
        q = st.image_jpeg_quality
        return _Plan(zh, modality, diag, patient, st.pick(rng, st.date_formats), heads,
                     st.pick(rng, st.phi_positions), int(rng.integers(q[0], q[1] + 1)) if q else None)

    def report(self, plan: _Plan, file: str, index: int) -> ReportTruth:
        p, zh, rng = plan.patient, plan.zh, self.rng
        dob, exam = format_date(p.dob, plan.date_fmt), format_date(p.exam, plan.date_fmt)
        name = p.name_zh if zh else p.name_en
        h = plan.heads
        mod_text = ((CHINESE_STRINGS[1] if plan.modality == "FFA" else CHINESE_STRINGS[2]) if zh else
                    ("Fundus fluorescein angiography (FFA)" if plan.modality == "FFA"
                     else "Indocyanine green angiography (ICGA)"))
        header = [
            CHINESE_STRINGS[0] if zh else "Fundus Angiography Report",
            f"{h['name']}: {name}   {h['id']}: {p.id}",
            f"{h['dob']}: {dob}   {'电话' if zh else 'Phone'}: {p.phone}",
            f"{h['exam']}: {exam}   {'检查项目' if zh else 'Exam'}: {mod_text}",
            CHINESE_STRINGS[4] if zh else "Eye: OU",
        ]
        truth = ReportTruth(file, index, [self.page], "zh" if zh else "en", False, plan.modality, plan.diag[0],
                            plan.diag[2] if zh else plan.diag[1], p.id, p.exam.isoformat(), p.dob.isoformat(),
                            [p.name_en, p.name_zh, p.id, p.phone, dob, exam])
        y = 800.0
        for i, line in enumerate(header):
            self.text(50, y, line, 15 if i == 0 else 11)
            y -= 22
        lo, hi = self.style.frames
        n_frames = int(rng.integers(lo, hi + 1))
        order = ["OD", "OS"] if rng.random() < 0.7 else ["OS", "OD"]
        t1 = float(rng.integers(15, 60))
        y = self._composite(plan, truth, order, t1, y - 10)
        self.text(50, y - 30, "所见: 见图。" if zh else "Findings: see images.")
        self.text(50, y - 50, f"诊断: {plan.diag[2]}" if zh else f"Diagnosis: {plan.diag[1]}")
        self.text(50, y - 90, CHINESE_STRINGS[7] if zh else "Reporting physician: signed")
        singles = n_frames - 2
        eye = order[int(rng.integers(2))]
        times = sorted(float(t) for t in rng.choice(np.arange(60, 900), size=max(singles, 1), replace=False))
        for start in range(0, singles, 4):
            self.new_page()
            truth.pages.append(self.page)
            self.text(50, 800, f"{'右眼' if eye == 'OD' else '左眼'} 晚期" if zh else f"{eye} late phase")
            for k, t in enumerate(times[start : start + 4]):
                self._single(plan, truth, eye, t, k)
        return truth

    def _phi_line(self, plan: _Plan) -> str:
        p = plan.patient
        return f"{p.name_en} ID:{p.id} {format_date(p.exam, plan.date_fmt)} {p.clock}"

    def _label(self, eye: str, zh: bool, dropped: bool) -> str:
        if dropped:
            return ""
        return ("右眼 OD" if eye == "OD" else "左眼 OS") if zh else eye

    def _burn_phi(self, img: np.ndarray, plan: _Plan, panels: list[tuple[int, int]], top: int) -> np.ndarray:
        """Patient identifiers where this device prints them (``panels``: x offsets of the squares)."""
        p, s = plan.patient, self.size
        pos = plan.phi_position
        if pos == "top":
            return draw_text(img, (6, 4), self._phi_line(plan))
        if pos == "bottom_right":
            line = f"{p.name_en} {p.id}"
            w, _ = text_size(line)
            return draw_text(img, (img.shape[1] - w - 6, img.shape[0] - 20), line)
        if pos == "left_vertical":
            return draw_text(img, (2, top), f"ID {p.id} {format_date(p.dob, plan.date_fmt)}", size=13,
                             vertical=True)
        # in_field: over the retina, lower right of the first panel
        return draw_text(img, (panels[0] + s // 2 - 10, top + int(s * 0.62)), p.id, size=12)

    def _composite(self, plan: _Plan, truth: ReportTruth, order: list[str], t1: float, y_top: float) -> float:
        """Two eyes side by side in one image; returns the y (points) below it."""
        s, rng, st = self.size, self.rng, self.style
        gap, bar, left = 16, 24, (22 if plan.phi_position == "left_vertical" else 0)
        bottom = bar + (22 if plan.phi_position == "bottom_right" else 0)
        layout = st.pick(rng, tuple(x for x in st.label_layouts if x != "beside") or ("burned",))
        tag = "FA" if plan.modality == "FFA" else "ICGA"
        comp = np.zeros((bar + s + bottom, left + 2 * s + gap), np.uint8)
        xs = [left + k * (s + gap) for k in range(2)]
        labels = []
        for k, eye in enumerate(order):
            comp[bar : bar + s, xs[k] : xs[k] + s] = angiogram(eye, plan.modality, t1 + k, rng, s)
            dropped = st.label_dropout > 0 and rng.random() < st.label_dropout
            labels.append((f"{self._label(eye, plan.zh, dropped)}  {tag} {clock(t1 + k)}".strip(), not dropped))
            if layout == "burned":
                comp = draw_text(comp, (xs[k] + 6, bar + s + 4), labels[-1][0])
        comp = self._burn_phi(comp, plan, xs, bar)
        w_pt = 400.0 * comp.shape[1] / (2 * s + gap)
        h_pt = w_pt * comp.shape[0] / comp.shape[1]
        x0, y0 = 50.0, y_top - h_pt
        self.image(comp, x0, y0, w_pt, plan.jpeg)
        sc = w_pt / comp.shape[1]
        for k, eye in enumerate(order):
            truth.frames.append(FrameTruth(self.page, (x0 + xs[k] * sc, y0 + bottom * sc, x0 + (xs[k] + s) * sc,
                                                       y0 + (bottom + s) * sc), eye, plan.modality, t1 + k,
                                           labels[k][1], layout))
            if layout == "caption":
                self.text(x0 + xs[k] * sc + 4, y0 - 14, labels[k][0], 10)
        return y0

    def _single(self, plan: _Plan, truth: ReportTruth, eye: str, t: float, k: int) -> None:
        """One late frame, four to a page (two rows of two); its label burned in, under it or beside it."""
        s, rng, st = self.size, self.rng, self.style
        bar, left = 24, (22 if plan.phi_position == "left_vertical" else 0)
        bottom = bar + (22 if plan.phi_position == "bottom_right" else 0)
        layout = st.pick(rng, st.label_layouts)
        dropped = st.label_dropout > 0 and rng.random() < st.label_dropout
        label = f"{self._label(eye, plan.zh, dropped)} {clock(t)}".strip()
        frame = np.zeros((bar + s + bottom, left + s), np.uint8)
        frame[bar : bar + s, left:] = angiogram(eye, plan.modality, t, rng, s)
        frame = self._burn_phi(frame, plan, [left], bar) if plan.phi_position != "top" else draw_text(
            frame, (4, 4), f"ID:{plan.patient.id}")
        if layout == "burned":
            frame = draw_text(frame, (left + 4, bar + s + 4), label)
        fw = (180.0 if layout == "beside" else 230.0) * frame.shape[1] / s
        fh = fw * frame.shape[0] / frame.shape[1]
        col, row = k % 2, k // 2
        fx, fy = 50.0 + col * 270.0, 770.0 - row * 340.0 - fh
        self.image(frame, fx, fy, fw, plan.jpeg)
        sc = fw / frame.shape[1]
        if layout == "caption":  # half of them in the minutes'seconds" form
            when = clock(t) if rng.random() < 0.5 else f"{int(t // 60)}'{int(t % 60):02d}\""
            self.text(fx + 4, fy - 14, f"{self._label(eye, plan.zh, dropped)} {when}".strip(), 10)
        elif layout == "beside":
            self.text(fx + fw + 6, fy + bottom * sc + s * sc / 2, label, 10)
        truth.frames.append(FrameTruth(self.page, (fx + left * sc, fy + bottom * sc, fx + fw, fy + (bottom + s) * sc),
                                       eye, plan.modality, t, not dropped, layout))


def rasterize(path: Path, rng: np.random.Generator, dpi: int = 110, rotation_deg: float = 0.0,
              jpeg_quality: int = 85) -> None:
    """Replace a PDF by a 'scan' of itself: each page one noisy grey JPEG filling the page, no text layer,
    optionally rotated about the page centre (paper fed askew)."""
    import cv2
    import pypdfium2 as pdfium
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    pdf = pdfium.PdfDocument(path.read_bytes())
    pages = []
    for page in pdf:
        w, h = page.get_size()
        grey = page.render(scale=dpi / 72, grayscale=True).to_numpy()
        grey = grey[:, :, 0] if grey.ndim == 3 else grey
        if rotation_deg:
            hh, ww = grey.shape
            m = cv2.getRotationMatrix2D((ww / 2, hh / 2), rotation_deg, 1.0)
            grey = cv2.warpAffine(grey, m, (ww, hh), flags=cv2.INTER_LINEAR, borderValue=255)
        grey = np.clip(grey + rng.normal(0, 4, grey.shape), 0, 255).astype(np.uint8)
        pages.append((w, h, ImageReader(io.BytesIO(encode_image(grey, jpeg_quality)))))
    pdf.close()
    c = canvas.Canvas(str(path), invariant=1)
    for w, h, img in pages:
        c.setPageSize((w, h))
        c.drawImage(img, 0, 0, width=w, height=h)
        c.showPage()
    c.save()


def write_pdf(path: Path, rng: np.random.Generator, reports: list[tuple[bool, str, tuple, Patient]],
              style: Style = STANDARD, size: int = 192) -> list[ReportTruth]:
    """One PDF holding ``reports`` (each ``(chinese, modality, diagnosis, patient)``) one after the other."""
    writer = _Writer(path, rng, style, size)
    truths = []
    for i, (zh, modality, diag, patient) in enumerate(reports):
        if i:
            writer.new_page()
        truths.append(writer.report(writer.plan(zh, modality, diag, patient), path.name, i))
    writer.close()
    return truths


def generate_corpus(out_dir: str | Path, n: int, seed: int = 0, style: Style = STANDARD,
                    scanned_fraction: float = 0.15, unknown_fraction: float = 0.1,
                    size: int = 192) -> list[ReportTruth]:
    """Write ``n`` PDFs to ``out_dir`` plus ``truth.json`` (one entry per report; a two-patient PDF has two).
    Every second PDF is Chinese; patients recur across PDFs (about 1 in 3)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    known = [d for d in DIAGNOSES if d[0]]
    unknown = [d for d in DIAGNOSES if not d[0]]
    patients: list[Patient] = []
    truths: list[ReportTruth] = []

    def one_report(zh: bool, fresh: bool = False) -> tuple:
        if patients and not fresh and rng.random() < 0.3:
            old = patients[int(rng.integers(len(patients)))]
            patient = Patient(**{**asdict(old), "exam": old.exam + timedelta(days=90)})
        else:
            patient = make_patient(rng, alnum_id=style.all_header_forms and rng.random() < 0.3)
            patients.append(patient)
        diag = (unknown[int(rng.integers(len(unknown)))] if rng.random() < unknown_fraction
                else known[int(rng.integers(len(known)))])
        return zh, "FFA" if rng.random() < 0.6 else "ICGA", diag, patient

    for i in range(n):
        zh = i % 2 == 1
        specs = [one_report(zh)]
        if style.two_patient_fraction and rng.random() < style.two_patient_fraction:
            specs.append(one_report(zh, fresh=True))
        path = out / f"report_{i:04d}.pdf"
        file_truths = write_pdf(path, rng, specs, style, size)
        if rng.random() < scanned_fraction:
            lo, hi = style.scan_rotation_deg
            angle = float(rng.uniform(lo, hi)) * (1 if rng.random() < 0.5 else -1) if hi else 0.0
            q = int(rng.integers(style.scan_jpeg_quality[0], style.scan_jpeg_quality[1] + 1))
            rasterize(path, rng, rotation_deg=angle, jpeg_quality=q)
            for t in file_truths:
                t.scanned = True
        truths += file_truths
    (out / "truth.json").write_text(json.dumps([asdict(t) for t in truths], ensure_ascii=False, indent=1))
    return truths


def load_truth(path: str | Path) -> list[ReportTruth]:
    """``truth.json`` back as dataclasses."""
    rows = json.loads(Path(path).read_text())
    return [ReportTruth(**{**r, "frames": [FrameTruth(**f) for f in r["frames"]]}) for r in rows]


def generator_cjk_text() -> str:
    """Every Chinese character the generator can write (the committed font subset must hold them all)."""
    parts = [s for _, s in SURNAMES] + [g for _, g in GIVEN] + [d[2] for d in DIAGNOSES] + CHINESE_STRINGS
    parts += NAME_HEADS["zh"] + ID_HEADS["zh"] + DOB_HEADS["zh"] + EXAM_HEADS["zh"] + ["年月日", "检查项目"]
    return "".join(sorted({ch for s in parts for ch in s if is_cjk(ch)}))
