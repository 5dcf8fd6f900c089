"""Data engine: clinical PDF angiography reports -> de-identified, labelled dataset with a review queue.

Stages, each its own module (import them directly; nothing heavy is imported here):
``extract`` (pypdfium2: native images, text layer, scanned pages), ``ocr`` (rapidocr, tesseract fallback),
``analyze`` (eye, modality, frame times, exam date, diagnosis -> vocabulary), ``deidentify`` (PHI scrubbing,
burned-in text erasure), ``match`` (panel split, OD/OS, exams), ``process`` (one report end to end),
``state`` (SQLite WAL), ``pipeline`` (``run``, ``status``), ``review`` (the web page), ``synthetic`` (test
reports). Command line: ``clearmamba engine run|status|review``; see docs/engine.md.
"""
