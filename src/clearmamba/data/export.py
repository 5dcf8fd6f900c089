"""Write an ExamSet as PNG frames plus a CSV manifest (the format ``load_manifest`` reads)."""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import numpy as np

from clearmamba.data.examset import ExamSet
from clearmamba.data.loaders import MANIFEST_COLUMNS


def write_manifest(exams: ExamSet, out: str | Path, image_dir: str = "frames") -> Path:
    """PNG per real frame under ``out/image_dir`` and ``out/manifest.csv`` (written atomically, last)."""
    from PIL import Image

    out = Path(out)
    (out / image_dir).mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(len(exams)):
        for j in range(int(exams.mask[i].sum())):
            frame = exams.frames[i, j].numpy().transpose(1, 2, 0)
            frame = (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8)
            rel = f"{image_dir}/{exams.exam_id[i]}_{j:02d}.png"
            Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame).save(out / rel)
            label = int(exams.labels[i])
            rows.append(
                {
                    "path": rel,
                    "exam_id": exams.exam_id[i],
                    "patient_id": exams.patient_id[i],
                    "eye": exams.eye[i],
                    "modality": exams.modality[i],
                    "frame_time": f"{float(exams.frame_times[i, j]):.3f}",
                    "label": exams.class_names[label] if label >= 0 else "unknown",
                    "device_id": exams.device_id[i],
                }
            )
    fd, tmp = tempfile.mkstemp(suffix=".csv", dir=out)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*MANIFEST_COLUMNS, "device_id"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / "manifest.csv")
    return out / "manifest.csv"
