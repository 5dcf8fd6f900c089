"""Data engine: clinical PDF angiography reports -> de-identified, labelled dataset with a review queue.

Stages, each its own module (import them directly; nothing heavy is imported here):
``extract`` (pypdfium2: native images, text layer, deskewed scanned pages), ``ocr`` (rapidocr detector and
reader, tesseract as a second engine), ``phi`` (the PHI vocabulary: header fields, dates, scrubbing),
``analyze`` (eye, modality, frame times, diagnosis -> vocabulary, reports within a PDF), ``deidentify``
(black outside the field of view, every text region erased, the check after erasure), ``match`` (panels,
fragments, labels to panels, the eye policy, frame order), ``process`` (one PDF end to end), ``state`` (SQLite
WAL), ``pipeline`` (``run``, ``status``), ``review`` (the web page), ``errors`` (what a user can fix). Test
reports: :mod:`clearmamba.testing`. Command line: ``clearmamba engine run|status|review``; see docs/engine.md.
"""
