"""Corpora shared by the engine tests, generated once per session with the public fixtures in
``clearmamba.testing``: a standard one (English born-digital, Chinese born-digital with an unknown diagnosis,
English scanned) with the bad PDFs, and a harder one (a two-patient PDF with vertical PHI and dotted dates, a
Chinese scan turned 4 degrees and saved as JPEG quality 30 with PHI bottom-right, a PDF of JPEG images with an ID
burned over the retina, labels beside the images, eye labels left off, 3-8 frames a report)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("pypdfium2")
pytest.importorskip("reportlab")
pytest.importorskip("rapidocr")

from clearmamba.testing.bad_pdfs import write_bad_pdfs  # noqa: E402
from clearmamba.testing.reports import DIAGNOSES, HARD, STANDARD, make_patient, rasterize, write_pdf  # noqa: E402


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    reports = root / "reports"
    reports.mkdir()
    rng = np.random.default_rng(7)
    shared = make_patient(rng)
    truths = [
        *write_pdf(reports / "a_en.pdf", rng, [(False, "FFA", DIAGNOSES[0], shared)], STANDARD),
        *write_pdf(reports / "b_zh.pdf", rng, [(True, "ICGA", DIAGNOSES[7], make_patient(rng))], STANDARD),
        *write_pdf(reports / "c_scan.pdf", rng, [(False, "ICGA", DIAGNOSES[2], shared)], STANDARD),
    ]
    rasterize(reports / "c_scan.pdf", rng)
    truths[2].scanned = True
    bad = write_bad_pdfs(root / "bad", reports / "a_en.pdf")
    return {"root": root, "reports": reports, "truths": {t.file: t for t in truths}, "bad": bad}


def _hard(**changes):
    return dataclasses.replace(HARD, two_patient_fraction=0.0, **changes)


@pytest.fixture(scope="session")
def hard_corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("hard")
    rng = np.random.default_rng(11)
    p1, p2, p3, p4 = (make_patient(rng, alnum_id=k == 1) for k in range(4))
    truths = []
    truths += write_pdf(root / "h_two.pdf", rng, [(False, "FFA", DIAGNOSES[1], p1), (False, "ICGA", DIAGNOSES[4], p2)],
                        _hard(phi_positions=("left_vertical",), date_formats=("dmy_dot",), frames=(3, 3)))
    truths += write_pdf(root / "h_scan.pdf", rng, [(True, "FFA", DIAGNOSES[3], p3)],
                        _hard(phi_positions=("bottom_right",), date_formats=("zh",), frames=(5, 5)))
    rasterize(root / "h_scan.pdf", rng, rotation_deg=4.0, jpeg_quality=30)
    truths[-1].scanned = True
    truths += write_pdf(root / "h_field.pdf", rng, [(False, "FFA", DIAGNOSES[5], p4)],
                        _hard(phi_positions=("in_field",), date_formats=("ymd_slash",), frames=(4, 4),
                              label_layouts=("beside",)))
    return {"root": root, "truths": truths}
