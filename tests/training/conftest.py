import pytest
import torch

import clearmamba.models.baselines  # noqa: F401  (registers the clear_* models)
from clearmamba.data.examset import ExamSet
from clearmamba.models import create_model

SIZE = 16
CLASSES = ("normal", "leakage", "staining")
# small enough to train in a second: 16 px frames, a narrow MedMamba
TINY = {"num_classes": 3, "in_chans": 1, "backbone_kwargs": {"dims": [8, 16, 32, 64], "d_state": 4}}


def make_exams(n: int = 12, t: int = 3, seed: int = 0, name: str = "train") -> ExamSet:
    """Exams whose class sets the brightness trend over frames (learnable from the frames alone)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    base = torch.rand(n, t, 1, SIZE, SIZE, generator=g) * 0.3
    trend = torch.linspace(0, 1, t)[None, :, None, None, None]
    is_class = [(labels == k).float()[:, None, None, None, None] for k in range(3)]
    frames = base + 0.5 * is_class[1] * trend + 0.4 * is_class[2]
    mask = torch.ones(n, t, dtype=torch.bool)
    mask[::4, -1] = False
    frames[~mask] = 0
    times = torch.arange(t, dtype=torch.float32).expand(n, t) * 30 * mask
    ids = [f"{name}-{i}" for i in range(n)]
    return ExamSet(
        frames=frames.clamp(0, 1), labels=labels, frame_times=times, mask=mask, exam_id=ids,
        patient_id=[f"p{i}" for i in range(n)], eye=["OD"] * n, modality=["FFA"] * n, device_id=["dev0"] * n,
        class_names=CLASSES, name=name,
    )  # fmt: skip


@pytest.fixture
def exams():
    return make_exams(9, seed=0, name="train"), make_exams(6, seed=1, name="val")


def tiny_model(head: str = "evidential", temporal: str = "mamba", seed: int = 0):
    torch.manual_seed(seed)
    return create_model("clear_mamba_tiny", head=head, temporal=temporal, **TINY)


def checkpoint_config(head: str = "evidential", temporal: str = "mamba") -> dict:
    return {
        "arch": "clear_mamba_tiny",
        "model_kwargs": {**TINY, "head": head, "temporal": temporal},
        "classes": list(CLASSES),
        "preprocessing": {"frame_size": [SIZE, SIZE], "in_chans": 1},
        "data_hash": "test",
    }
