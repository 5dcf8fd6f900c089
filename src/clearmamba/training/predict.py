"""Predict exams read from image files or exam folders, with the checkpoint's refer-to-a-doctor rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .evaluate import refer_flags
from .sources import IMAGE_SUFFIXES, read_image, stack_exams


def read_exam(path: Path, size: tuple[int, int], in_chans: int) -> tuple[list[torch.Tensor], list[str]]:
    """Frames of one exam (an image, or a folder of frames in name order) and the files that failed."""
    files = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    frames, errors = [], []
    for file in files:
        try:
            frames.append(read_image(file, size, in_chans))
        except ValueError as error:
            errors.append(str(error))
    if path.is_dir() and not files:
        errors.append(f"{path}: folder holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return frames, errors


@torch.no_grad()
def predict_paths(model: nn.Module, config: dict, paths: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """One result per readable exam; unreadable files are named in the error list and skipped."""
    size = tuple(config["preprocessing"]["frame_size"])
    in_chans = config["preprocessing"]["in_chans"]
    classes = config["classes"]
    results, errors = [], []
    for path in map(Path, paths):
        if not path.exists():
            errors.append(f"{path}: no such file or folder")
            continue
        frames, failed = read_exam(path, size, in_chans)
        errors += failed
        if not frames:
            continue
        x, times, mask = stack_exams([frames], [[float(i) for i in range(len(frames))]])
        prediction = model.eval()(x, times, mask)
        scores = prediction.scores()
        k = int(prediction.predicted[0])
        result = {
            "exam": str(path),
            "frames": len(frames),
            "diagnosis": classes[k],
            "probability": float(prediction.probs[0, k]),
            "probabilities": {c: float(prediction.probs[0, j]) for j, c in enumerate(classes)},
            **{name: float(value[0]) for name, value in scores.items()},
            "refer": bool(refer_flags(prediction, config.get("referral"))[0]),
        }
        results.append(result)
    return results, errors
