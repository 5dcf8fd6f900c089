"""Where a report's numbers come from: a typed record the caller fills from the run record.

The report shows every field (and says "not recorded" for the ones left empty) beside the thresholds of the
referral rule, so a reader can tell which checkpoint, data, split and seed produced the page.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields

import clearmamba


@dataclass(frozen=True)
class Provenance:
    clearmamba_version: str = clearmamba.__version__
    seed: int | None = None
    split: str | None = None  # how validation / test were drawn, e.g. "patient-level 60/20/20, seed 0"
    checkpoint_sha256: str | None = None
    data_sha256: str | None = None
    data: str | None = None  # the data source, e.g. "builtin" or a manifest path
    command: str | None = None
    torch_version: str | None = None
    created_utc: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    extra: tuple[tuple[str, str], ...] = ()  # further (name, value) pairs

    def rows(self) -> list[tuple[str, str]]:
        """(label, value) pairs for the page; hashes shortened to 16 hex digits, empty fields said so."""
        out = []
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if f.name.endswith("sha256") and value:
                value = f"{value[:16]}… (SHA-256)"
            out.append((f.name.replace("_", " "), "not recorded" if value in (None, "") else str(value)))
        return out + [(str(k), str(v)) for k, v in self.extra]
