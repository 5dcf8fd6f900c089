import pytest
import torch

import clearmamba.models.baselines  # noqa: F401  (registers the clear_* models)
from clearmamba.data.examset import ExamSet
from clearmamba.data.sources import Source, examset_sha256, training_splits
from clearmamba.models import create_model
from clearmamba.training import TrainConfig
from clearmamba.training.record import MethodSpec
from clearmamba.training.run import RunConfig, train_run

SIZE = 16
CLASSES = ("normal", "leakage", "staining")
# small enough to train in a second: 16 px frames, a narrow MedMamba
TINY = {"num_classes": 3, "in_chans": 1, "backbone_kwargs": {"dims": [8, 16, 32, 64], "d_state": 4}}
TINY_OPTIONS = {"backbone_kwargs": TINY["backbone_kwargs"]}
FAST = TrainConfig(epochs=2, batch_size=4, eval_batch_size=8, lr=3e-3, warmup_epochs=1, patience=0, seed=7)


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
        patient_id=[f"{name}-p{i}" for i in range(n)], eye=["OD"] * n, modality=["FFA"] * n,
        device_id=["dev0"] * n, class_names=CLASSES, name=name,
    )  # fmt: skip


def exam_source(n_train: int = 9, n_val: int = 6, n_test: int = 3) -> Source:
    sets = {"train": make_exams(n_train, seed=0, name="train"), "val": make_exams(n_val, seed=1, name="val"),
            "test": make_exams(n_test, seed=2, name="test")}  # fmt: skip
    return Source("exams", sets, examset_sha256(*sets.values()), "seconds")


@pytest.fixture
def exams():
    return make_exams(9, seed=0, name="train"), make_exams(6, seed=1, name="val")


def tiny_model(head: str = "evidential", temporal: str = "mamba", seed: int = 0):
    torch.manual_seed(seed)
    return create_model("clear_mamba_tiny", head=head, temporal=temporal, **TINY)


def tiny_config(head: str = "evidential", train: TrainConfig = FAST, posthoc: bool = True) -> RunConfig:
    method = MethodSpec(head, {"kl_weight": 0.05} if head == "evidential" else {})
    return RunConfig(data="exams", arch="clear_mamba_tiny", model_options={"head": head, **TINY_OPTIONS},
                     method=method, train=train, posthoc=posthoc)  # fmt: skip


def train_tiny(out, head: str = "evidential", train: TrainConfig = FAST, source: Source | None = None, **kwargs):
    """Train the tiny model on the synthetic exams through the CLI's own job; (model, record)."""
    source = source or exam_source()
    sets, rule = training_splits(source, train.seed)
    return train_run(tiny_config(head, train, kwargs.pop("posthoc", True)), out, data=(source, sets, rule),
                     log=lambda _: None, **kwargs)  # fmt: skip
