"""A PNG contact sheet of exams: frames across (with their times), one row per class, FFA and ICGA."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from clearmamba.data.examset import ExamSet


def pick_preview_rows(exams: ExamSet, per_class: int = 1, modalities=("FFA", "ICGA")) -> list[int]:
    """Indices of the first ``per_class`` exams of each class and modality having all frames."""
    rows = []
    labels = exams.labels.tolist()
    full = exams.mask.all(1).tolist()
    for modality in modalities:
        for k in range(exams.num_classes):
            hits = [i for i, y in enumerate(labels) if y == k and exams.modality[i] == modality and full[i]]
            rows += hits[:per_class]
    return rows


def write_preview(exams: ExamSet, path: str | Path, rows: list[int] | None = None, scale: int = 2) -> Path:
    """Write a grid PNG (atomically): one exam per row, frames across, labelled with class/modality/time."""
    from PIL import Image, ImageDraw, ImageFont

    rows = pick_preview_rows(exams) if rows is None else rows
    if not rows:
        raise ValueError("write_preview: no exams to show")
    _, t, _, h, w = exams.frames.shape
    cell_h, cell_w = h * scale, w * scale
    pad, left, top = 4, 170, 22
    sheet = Image.new("L", (left + t * (cell_w + pad), top + len(rows) * (cell_h + pad)), color=255)
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    draw.text((4, 4), "frames across (seconds after injection), one exam per row", fill=0, font=font)
    for r, i in enumerate(rows):
        y0 = top + r * (cell_h + pad)
        label = int(exams.labels[i])
        name = exams.class_names[label] if 0 <= label < exams.num_classes else "unknown"
        text = f"{name}\n{exams.modality[i]} {exams.eye[i]} {exams.device_id[i]}"
        draw.multiline_text((4, y0 + cell_h // 2 - 14), text, fill=0, font=font)
        for j in range(t):
            if not bool(exams.mask[i, j]):
                continue
            frame = exams.frames[i, j].mean(0).numpy()
            tile = Image.fromarray((np.clip(frame, 0, 1) * 255).astype(np.uint8)).resize((cell_w, cell_h))
            x0 = left + j * (cell_w + pad)
            sheet.paste(tile, (x0, y0))
            draw.text((x0 + 2, y0 + 1), f"{float(exams.frame_times[i, j]):.0f}s", fill=255, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        sheet.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
