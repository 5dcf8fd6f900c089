"""Public test fixtures: synthetic angiography report PDFs with their ground truth, and broken PDFs.

Used by the test suite and ``benchmarks/engine.py``; needs the test extra (reportlab, matplotlib, pillow,
pypdfium2, pypdf). Nothing here touches patient data: every name, ID and image is drawn.

- :mod:`clearmamba.testing.reports`: :func:`~clearmamba.testing.reports.generate_corpus` writes a corpus in the
  :data:`~clearmamba.testing.reports.STANDARD` or :data:`~clearmamba.testing.reports.HARD` style plus
  ``truth.json``; :func:`~clearmamba.testing.reports.write_pdf` writes one PDF of one or more reports.
- :mod:`clearmamba.testing.images`: :func:`~clearmamba.testing.images.angiogram` frames and burned-in text.
- :mod:`clearmamba.testing.bad_pdfs`: encrypted, truncated, not-a-PDF, decompression bomb, huge page.
- :mod:`clearmamba.testing.fonts`: fonts that never depend on what the machine has installed.
"""
