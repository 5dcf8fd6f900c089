"""A small corpus shared by the engine tests: three reports (English born-digital, Chinese born-digital with
an unknown diagnosis, English scanned) and the bad PDFs, generated once per session."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pypdfium2")
pytest.importorskip("reportlab")
pytest.importorskip("rapidocr")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict:
    from clearmamba.engine.synthetic import DIAGNOSES, _patient, rasterize, write_bad_pdfs, write_report

    root = tmp_path_factory.mktemp("corpus")
    reports = root / "reports"
    reports.mkdir()
    rng = np.random.default_rng(7)
    shared_patient = _patient(rng)
    truths = [
        write_report(reports / "a_en.pdf", rng, False, "FFA", DIAGNOSES[0], shared_patient),
        write_report(reports / "b_zh.pdf", rng, True, "ICGA", DIAGNOSES[7], _patient(rng)),
        write_report(reports / "c_scan.pdf", rng, False, "ICGA", DIAGNOSES[2], shared_patient),
    ]
    rasterize(reports / "c_scan.pdf", rng=rng)
    truths[2].scanned = True
    bad = write_bad_pdfs(root / "bad", reports / "a_en.pdf")
    return {"root": root, "reports": reports, "truths": {t.file: t for t in truths}, "bad": bad}
