"""Analyzer: report fields from text (text layer or OCR), English and Chinese. Eye, modality, frame times,
exam date, and the diagnosis mapped onto a configurable label vocabulary. A diagnosis that matches no label,
several labels, or a negated/uncertain phrase is never guessed: it is returned with a review reason."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from clearmamba.engine.errors import VocabularyError
from clearmamba.engine.phi import HeaderFields, has_date, header_fields

DEFAULT_VOCABULARY: dict[str, list[str]] = {
    "normal": [
        "normal",
        "no abnormality",
        "no abnormality detected",
        "unremarkable",
        "未见明显异常",
        "未见异常",
        "正常",
    ],
    "diabetic_retinopathy": ["diabetic retinopathy", "DR", "NPDR", "PDR", "糖尿病视网膜病变", "糖网"],
    "retinal_vein_occlusion": [
        "retinal vein occlusion",
        "RVO",
        "BRVO",
        "CRVO",
        "视网膜静脉阻塞",
        "视网膜分支静脉阻塞",
        "视网膜中央静脉阻塞",
    ],
    "central_serous": [
        "central serous chorioretinopathy",
        "central serous",
        "CSC",
        "CSCR",
        "中心性浆液性脉络膜视网膜病变",
        "中浆",
    ],
    "amd": [
        "age-related macular degeneration",
        "AMD",
        "choroidal neovascularization",
        "CNV",
        "年龄相关性黄斑变性",
        "黄斑变性",
        "脉络膜新生血管",
    ],
    "pcv": ["polypoidal choroidal vasculopathy", "PCV", "息肉状脉络膜血管病变"],
    "uveitis": ["uveitis", "葡萄膜炎"],
}

_NEGATION = re.compile(
    r"(\bno\b|\bnot\b|\bwithout\b|\brule out\b|\br/o\b|\bsuspect\w*|\bpossible\b|\?|？"
    r"|疑似|可能|排除|不除外|待排)"
)
_CJK = r"\u2e80-\u9fff\uf900-\ufaff"


def normalize(text: str) -> str:
    """NFKC (full-width colons and digits become ASCII), lower case, no spaces between CJK characters (OCR
    engines insert them), single spaces elsewhere."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])", "", text)
    return re.sub(r"[ \t]+", " ", text).strip()


# OCR drops the space in "OS ICGA 0:44": a tag glued to a modality or a time still counts
_GLUED_TAG = r"(?=\b|ffa|fa\b|icga|icg\b|\d)"
_OD = re.compile(rf"\bod{_GLUED_TAG}|\bright eye\b|\bright\b|右眼")
_OS = re.compile(rf"\bos{_GLUED_TAG}|\bleft eye\b|\bleft\b|左眼")
_OU = re.compile(r"\bou\b|\bboth eyes\b|双眼")


def parse_eye(text: str) -> str | None:
    """'OD', 'OS', 'OU' (both named) or None."""
    t = normalize(text)
    if _OU.search(t):
        return "OU"
    od, os_ = bool(_OD.search(t)), bool(_OS.search(t))
    if od and os_:
        return "OU"
    return "OD" if od else "OS" if os_ else None


_FFA = re.compile(r"\bffa\b|\bfa\b|fluorescein|荧光素")
_ICGA = re.compile(r"\bicga?\b|indocyanine|吲哚菁绿|吲哚青绿")


def parse_modality(text: str) -> str | None:
    """'FFA', 'ICGA', 'FFA+ICGA' (both named) or None."""
    t = normalize(text)
    ffa, icga = bool(_FFA.search(t)), bool(_ICGA.search(t))
    if ffa and icga:
        return "FFA+ICGA"
    return "FFA" if ffa else "ICGA" if icga else None


_TIME_PATTERNS = [
    re.compile(r"(?<![\d:])(\d{1,2})\s*'\s*(\d{1,2}(?:\.\d+)?)\s*(?:\"|''|”|″)?"),  # 5'10"
    re.compile(r"(?<![\d:.])(\d{1,2}):(\d{2}(?:\.\d+)?)(?![\d:])"),  # 0:32, 00:32.5
    re.compile(r"(\d{1,2})\s*分\s*(\d{1,2}(?:\.\d+)?)\s*秒"),  # 5分10秒
]
_SECONDS = re.compile(r"(?<![\d.:])(\d{1,4}(?:\.\d+)?)\s*(?:s|sec|秒)\b")


def parse_frame_time(text: str) -> float | None:
    """Seconds after injection from a frame label ('0:32', '00:32.5', "5'10\"", '5分10秒', '32s'); None for
    lines that carry a calendar date (their clock time is when the exam happened, not a frame time)."""
    t = normalize(text)
    if has_date(t):
        return None
    for pattern in _TIME_PATTERNS:
        m = pattern.search(t)
        if m and float(m.group(2)) < 60:
            return round(int(m.group(1)) * 60 + float(m.group(2)), 3)
    m = _SECONDS.search(t)
    return float(m.group(1)) if m else None


@dataclass
class Vocabulary:
    """Labels and their synonyms (any language). Latin synonyms match whole words, CJK ones as substrings."""

    labels: dict[str, list[str]]
    _patterns: list[tuple[str, re.Pattern]] = field(init=False, repr=False)

    def __post_init__(self):
        self._patterns = []
        for label, synonyms in self.labels.items():
            for syn in [label.replace("_", " "), *synonyms]:
                s = normalize(syn)
                core = re.escape(s)
                self._patterns.append(
                    (label, re.compile(core if re.search(f"[{_CJK}]", s) else rf"\b{core}\b"))
                )

    def match(self, diagnosis: str | None) -> tuple[str | None, str | None]:
        """(label, None) when exactly one label matches, else (None, review reason)."""
        if not diagnosis or not diagnosis.strip():
            return None, "no_diagnosis"
        t = normalize(diagnosis)
        hits: dict[str, int] = {}
        for label, pattern in self._patterns:
            for m in pattern.finditer(t):
                hits.setdefault(label, m.start())
        if not hits:
            return None, "unknown_diagnosis"
        if len(hits) > 1:
            return None, "ambiguous_diagnosis"
        label, start = next(iter(hits.items()))
        # a negation/uncertainty word before the match ("no DR", "疑似") makes the label unsafe
        before = t[:start]
        matched_text = t[start:]
        if _NEGATION.search(before) or (label != "normal" and _NEGATION.search(matched_text)):
            return None, "uncertain_diagnosis"
        return label, None


def load_vocabulary(path: str | Path | None) -> Vocabulary:
    """The default vocabulary, or one from a YAML/JSON file mapping label -> list of synonyms."""
    if path is None:
        return Vocabulary(DEFAULT_VOCABULARY)
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw)
        else:
            data = json.loads(raw)
    except (OSError, ValueError) as err:
        kind = "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
        raise VocabularyError(f"--vocab {path}: cannot read it as {kind} ({type(err).__name__}: {err}); "
                              "expected a mapping 'label: [synonym, ...]'") from None
    if not isinstance(data, dict) or not data:
        raise VocabularyError(f"--vocab {path}: expected a mapping 'label: [synonym, ...]', got {type(data).__name__}")
    for label, syns in data.items():
        if (
            not isinstance(label, str)
            or not isinstance(syns, list)
            or not all(isinstance(s, str) for s in syns)
        ):
            raise VocabularyError(f"--vocab {path}: label {label!r}: expected a list of synonym strings, got {syns!r}")
    return Vocabulary({str(k): list(v) for k, v in data.items()})


_DIAG_HEAD = re.compile(
    r"^\s*(?:diagnosis|diagnoses|impression|conclusion|诊断|印象|结论|临床诊断)\s*[:：]\s*(.*)$", re.I
)
def find_diagnosis(lines: list[str]) -> str | None:
    """The text after the first 'Diagnosis:' / '诊断:' style heading."""
    for line in lines:
        m = _DIAG_HEAD.match(unicodedata.normalize("NFKC", line))
        if m and m.group(1).strip():
            return m.group(1).strip()
    return None


@dataclass
class ReportFields:
    eye: str | None
    modality: str | None
    exam_date: date | None  # only from a labelled exam/visit date, never a birth date
    diagnosis: str | None
    label: str | None
    label_reason: str | None  # review reason when label is None
    header: HeaderFields

    @property
    def phi(self) -> list[str]:
        return self.header.known_phi


def analyze_text(lines: list[str], vocabulary: Vocabulary) -> ReportFields:
    diagnosis = find_diagnosis(lines)
    label, reason = vocabulary.match(diagnosis)
    header = header_fields(lines)
    eye_line = next((ln for ln in lines if _EYE_HEAD.search(unicodedata.normalize("NFKC", ln))), None)
    return ReportFields(
        eye=parse_eye(_EYE_HEAD.search(unicodedata.normalize("NFKC", eye_line)).group(1)) if eye_line else None,
        modality=parse_modality("\n".join(lines)),
        exam_date=header.exam_date,
        diagnosis=diagnosis,
        label=label,
        label_reason=reason,
        header=header,
    )


_EYE_HEAD = re.compile(r"(?:^|\s)(?:eye|眼别)\s*[:：]\s*(\S+(?:\s+eye)?)", re.I)


def segment_reports(page_lines: dict[int, list[str]]) -> list[list[int]]:
    """Pages grouped into reports: a page whose header names another patient (ID or name) or another exam date
    than the report so far starts a new report; pages without a header continue the current one."""
    segments: list[list[int]] = []
    current: tuple[str, str, str] | None = None
    for page in sorted(page_lines):
        key = header_fields(page_lines[page]).key()
        if not segments:
            segments.append([page])
            current = key if any(key) else None
            continue
        if any(key) and current is not None and _differs(key, current):
            segments.append([page])
            current = key
            continue
        segments[-1].append(page)
        if any(key):
            current = tuple(a or b for a, b in zip(key, current or ("", "", "")))
    return segments


def _differs(key: tuple[str, str, str], current: tuple[str, str, str]) -> bool:
    """Another patient (ID, allowing one OCR slip; or name) or another exam date, where both pages give it."""
    (pid, name, exam), (cid, cname, cexam) = key, current
    return bool((pid and cid and not _same(pid, cid)) or (name and cname and name != cname)
                or (exam and cexam and exam != cexam))


def _same(a: str, b: str) -> bool:
    """Equal, or one OCR slip apart (a dropped or misread digit must not split a report)."""
    if a == b:
        return True
    if min(len(a), len(b)) < 6 or abs(len(a) - len(b)) > 1:
        return False
    prev = list(range(len(b) + 1))  # Levenshtein distance, row by row
    for i, ca in enumerate(a, 1):
        row = [i]
        for j, cb in enumerate(b, 1):
            row.append(min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = row
    return prev[-1] <= 1
