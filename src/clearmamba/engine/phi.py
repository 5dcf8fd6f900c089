"""The PHI vocabulary, in one place: which header fields identify a patient (every head form in use, English and
Chinese), which dates exist in which formats, which date is the exam date, and the scrubber that removes all of
it from kept text. Images do not depend on this vocabulary: every text region on an image is erased whatever it
says (``deidentify``); this module decides what a *text* may keep and what becomes a known PHI string.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date

REDACTED = "[REDACTED]"

# ---- dates: every common format; a match that is not a valid calendar date is still PHI-like text
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])}
_MON = r"(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_Y4 = r"((?:19|20)\d{2})"
DATE_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("ymd", re.compile(rf"(?<!\d){_Y4}\s*[-/.年]\s*(\d{{1,2}})\s*[-/.月]\s*(\d{{1,2}})(?:\s*日)?(?!\d)")),  # 1985/03/07
    ("dmy_dot", re.compile(rf"(?<![\d.])(\d{{1,2}})\.(\d{{1,2}})\.{_Y4}(?!\d)")),  # 07.03.1985 (European)
    ("xy_slash", re.compile(rf"(?<![\d/])(\d{{1,2}})[/-](\d{{1,2}})[/-]{_Y4}(?!\d)")),  # 03/07/1985, 7-3-1985
    ("d_mon_y", re.compile(rf"(?<![\d])(\d{{1,2}})[\s-]*{_MON}[\s,-]*{_Y4}(?!\d)", re.I)),  # 7 Mar 1985
    ("mon_d_y", re.compile(rf"\b{_MON}\s*(\d{{1,2}}),?\s*{_Y4}(?!\d)", re.I)),  # March 7, 1985
    ("short", re.compile(r"(?<![\d/.])\d{1,2}[/.-]\d{1,2}[/.-]\d{2}(?![\d/.])")),  # 07/03/85: PHI, never parsed
]


def _valid(y: int, m: int, d: int) -> date | None:
    try:
        return date(y, m, d)
    except ValueError:
        return None


def _to_date(kind: str, g: tuple[str, ...]) -> date | None:
    if kind == "ymd":
        return _valid(int(g[0]), int(g[1]), int(g[2]))
    if kind == "dmy_dot":
        return _valid(int(g[2]), int(g[1]), int(g[0]))
    if kind == "xy_slash":  # day and month order is only certain when one of them exceeds 12
        a, b, y = int(g[0]), int(g[1]), int(g[2])
        if a > 12:
            return _valid(y, b, a)
        if b > 12:
            return _valid(y, a, b)
        return _valid(y, a, b) if a == b else None
    if kind == "d_mon_y":
        return _valid(int(g[2]), _MONTHS[g[1].lower()[:3]], int(g[0]))
    if kind == "mon_d_y":
        return _valid(int(g[2]), _MONTHS[g[0].lower()[:3]], int(g[1]))
    return None


def find_dates(text: str) -> list[tuple[tuple[int, int], date | None]]:
    """Every date-like span in ``text`` (NFKC-normalised) with its date, or None when the span is not a certain
    calendar date (03/07/1985 can be March or July; 07/03/85 has no century)."""
    t = unicodedata.normalize("NFKC", text)
    found: list[tuple[tuple[int, int], date | None]] = []
    for kind, pattern in DATE_PATTERNS:
        for m in pattern.finditer(t):
            if not any(s <= m.start() < e for (s, e), _ in found):
                found.append((m.span(), _to_date(kind, m.groups())))
    return sorted(found)


def has_date(text: str) -> bool:
    return bool(find_dates(text))


def parse_date(text: str) -> date | None:
    """The first certain calendar date in ``text``, or None."""
    return next((d for _, d in find_dates(text) if d is not None), None)


# ---- header fields: every head form in use; values run to two spaces, the next known head or the line end
FIELD_HEADS: dict[str, str] = {
    "name": r"patient\s*name|patient|name|姓名|患者姓名|患者|病人",
    "id": r"patient\s*id|mrn|id\s*no\.?|id|hospital\s*no\.?|record\s*no\.?|medical\s*record\s*(?:no\.?|number)"
    r"|病历号|住院号|门诊号|病案号|登记号|检查号|id号|卡号|就诊号|影像号|[\u4e00-\u9fff]{1,3}号",
    "phone": r"phone|tel\.?|telephone|mobile|电话|手机|联系电话",
    "dob": r"dob|date\s*of\s*birth|birth\s*date|birthday|出生日期|生日",
    "exam": r"exam(?:ination)?\s*date|date\s*of\s*(?:exam(?:ination)?|visit|study)|visit\s*date|study\s*date"
    r"|检查日期|就诊日期|造影日期|检查时间",
}
# other heads that end a value ("Name: ZHANG WEI  Sex: F")
_STOP_HEADS = r"sex|gender|age|exam|eye|department|dept\.?|doctor|性别|年龄|科室|检查项目|眼别|医生"
# the generic "...号" head (any Chinese record number) finds IDs but cannot end a value: it would cut a name
_ANY_HEAD = "|".join([*FIELD_HEADS.values(), _STOP_HEADS]).replace(r"|[\u4e00-\u9fff]{1,3}号", "")


def _head_re(head: str) -> re.Pattern:
    return re.compile(
        rf"(?<![a-z])(?:{head})\s*[:：#]\s*(.+?)(?=\s{{2,}}|\s*(?<![a-z])(?:{_ANY_HEAD})\s*[:：#]|$)",
        re.I | re.M,
    )


_HEAD_RES = {k: _head_re(v) for k, v in FIELD_HEADS.items()}
# OCR drops the space between a value and the next head ("WUMINGMRN: 1450154531"); heads written in capitals
# are split off again before parsing
_GLUED = re.compile(r"(?<=[A-Za-z])(?=(?:MRN|ID|Patient ID|Hospital No\.?|DOB|Phone|Tel)\s*[:：#])")


@dataclass
class HeaderFields:
    """Identifying header values found in a text; ``exam_date`` only from a labelled exam/visit date."""

    names: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    birth_dates: list[str] = field(default_factory=list)
    exam_dates: list[str] = field(default_factory=list)

    @property
    def known_phi(self) -> list[str]:
        return [*self.names, *self.ids, *self.phones, *self.birth_dates, *self.exam_dates]

    @property
    def patient_id(self) -> str | None:
        return self.ids[0] if self.ids else None

    @property
    def exam_date(self) -> date | None:
        """The labelled exam date; a birth date can never land here."""
        return next((d for d in (parse_date(v) for v in self.exam_dates) if d is not None), None)

    def key(self) -> tuple[str, str, str]:
        """Who and when, comparable across pages (spacing and case ignored)."""
        return tuple(squash(v[0]) if v else "" for v in (self.ids, self.names, self.exam_dates))


def header_fields(lines: list[str]) -> HeaderFields:
    text = _GLUED.sub(" ", "\n".join(unicodedata.normalize("NFKC", line) for line in lines))
    out = HeaderFields()
    targets = {"name": out.names, "id": out.ids, "phone": out.phones, "dob": out.birth_dates,
               "exam": out.exam_dates}
    for kind, pattern in _HEAD_RES.items():
        for m in pattern.finditer(text):
            value = m.group(1).strip(" ,;")
            if kind == "id" and not re.search(r"\d", value):
                continue  # "ID" heads followed by words are not identifiers
            if kind == "exam" and not has_date(value):
                continue  # "Exam: FFA" names the procedure
            if value and value not in targets[kind]:
                targets[kind].append(value)
    # a name head also matches inside "Patient ID:"; drop values that are another field's head + value
    out.names = [n for n in out.names if not _HEAD_RES["id"].match(n)]
    return out


# ---- scrubbing kept text (diagnosis): known values, then patterns
_ID_PATTERNS = [
    re.compile(r"(?<!\d)\+?\d[\d\- ]{7,}\d(?!\d)"),  # phone numbers and long ids with separators
    re.compile(r"(?<![A-Za-z\d])[A-Za-z]{0,3}\d{6,}(?!\d)"),  # ids: 6+ digits, optional letter prefix
    re.compile(rf"(?:{FIELD_HEADS['id']})\s*[:：#]\s*\S+", re.I),
]


def squash(text: str) -> str:
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


class PhiScrubber:
    """Finds and removes PHI in text: the report's own header values (``known``) and generic patterns."""

    def __init__(self, known: list[str] | tuple[str, ...] = ()):
        self.known = sorted({squash(k) for k in known if len(squash(k)) >= 2}, key=len, reverse=True)
        self._known_res = [re.compile(r"\s*".join(re.escape(ch) for ch in k), re.I) for k in self.known]

    def hits(self, text: str) -> list[str]:
        """PHI strings present in ``text`` (spacing- and case-insensitive for known values)."""
        squashed = squash(text)
        found = [k for k in self.known if k in squashed]
        norm = unicodedata.normalize("NFKC", text)
        found += [norm[s:e] for (s, e), _ in find_dates(norm)]
        for pattern in _ID_PATTERNS:
            found += [m.group(0) for m in pattern.finditer(norm)]
        return found

    def scrub(self, text: str) -> str:
        out = unicodedata.normalize("NFKC", text)
        for pattern in self._known_res:
            out = pattern.sub(REDACTED, out)
        for (s, e), _ in reversed(find_dates(out)):
            out = out[:s] + REDACTED + out[e:]
        for pattern in _ID_PATTERNS:
            out = pattern.sub(REDACTED, out)
        return out
