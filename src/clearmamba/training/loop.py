"""The training loop: plain PyTorch, one code path for CPU, one GPU and DDP (``torchrun``).

AdamW, linear warm-up then cosine decay (set per step), gradient clipping, early stopping on validation NLL,
the evidential KL annealed through the epoch passed to the loss, optional class-balanced sampling, a rich
progress bar (loss, accuracy, mean uncertainty), ``metrics.csv`` per epoch, the best checkpoint in
``<out>/checkpoint`` and a resumable state in ``<out>/last``.

Reproducibility: the data order of epoch ``e`` comes from a generator seeded with ``(seed, e)`` and the
global RNG is reseeded at the start of every epoch, so resuming from the last completed epoch gives the same
weights as a run that was never interrupted.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clearmamba.uncertainty import Prediction, SoftmaxCrossEntropy, create_evidential_loss

from . import checkpoint as ckpt
from .distributed import DistributedContext


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    patience: int = 5  # epochs without a better validation NLL before stopping; 0 disables early stopping
    balanced_sampling: bool = False
    evidential_loss: str = "mll"
    # RaP's recipe (docs/edl-variants.md): a fixed KL weight of 0.05 on the whole alpha, no annealing; the
    # paper's 0.005 annealed with the target removed was the weakest setting measured
    kl_weight: float = 0.05
    anneal_epochs: float = 0.0  # 0 = no annealing
    remove_target: bool = False
    posthoc: bool = True  # density gate + evidence scaling after training (evidential heads; training.posthoc)
    seed: int = 0
    amp: bool = True  # bfloat16 autocast, on CUDA only
    device: str = "auto"
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    checkpoint: Path
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float) -> float:
    # linear warm-up to 1, then min + (1 - min) (1 + cos(pi progress)) / 2
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_loss(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    head = getattr(getattr(ckpt.unwrap(model), "cfg", None), "head", "evidential")
    if head == "evidential":
        return create_evidential_loss("edl", loss=cfg.evidential_loss, kl_weight=cfg.kl_weight,
                                      kl_anneal_epochs=cfg.anneal_epochs, remove_target=cfg.remove_target)
    return SoftmaxCrossEntropy()


def mean_uncertainty(prediction: Prediction) -> torch.Tensor:
    """Vacuity K/S for evidential heads, 1 - max p otherwise (higher = more uncertain)."""
    return prediction.score("vacuity" if prediction.evidence is not None else "msp")


def epoch_indices(
    labels: torch.Tensor, epoch: int, seed: int, balanced: bool, rank: int = 0, world_size: int = 1
) -> torch.Tensor:
    """This rank's sample order for ``epoch``: a seeded permutation, or class-balanced draws with replacement."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    n = len(labels)
    if balanced:
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1).clamp_min(1).double()
        # P(i) proportional to 1 / n_{y_i}: every class is drawn equally often in expectation
        order = torch.multinomial(1.0 / counts[labels], n, replacement=True, generator=generator)
    else:
        order = torch.randperm(n, generator=generator)
    per_rank = math.ceil(n / world_size)
    order = torch.cat([order, order[: per_rank * world_size - n]])
    return order[rank::world_size]


def batches(dataset, indices: Sequence[int], batch_size: int) -> list[dict[str, Any]]:
    from clearmamba.data.examset import collate_exams

    indices = [int(i) for i in indices]
    starts = range(0, len(indices), batch_size)
    return [collate_exams([dataset[i] for i in indices[s : s + batch_size]]) for s in starts]


def dataset_labels(dataset) -> torch.Tensor:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        labels = torch.tensor([dataset[i]["label"] for i in range(len(dataset))])
    return torch.as_tensor(labels).long()


def forward_batch(model: nn.Module, batch: dict, device: torch.device) -> Prediction:
    return model(batch["frames"].to(device), batch["frame_times"].to(device), batch["mask"].to(device))


@torch.no_grad()
def predict(model: nn.Module, dataset, batch_size: int = 64, device: str | torch.device = "cpu") -> Prediction:
    """Predictions for a whole dataset, with ``labels`` and ``ids`` (exam ids) attached, on CPU."""
    model.eval()
    device = torch.device(device)
    parts = []
    for batch in batches(dataset, range(len(dataset)), batch_size):
        prediction = forward_batch(model, batch, device).detach().to("cpu")
        prediction.labels = batch["label"]
        prediction.ids = list(batch["exam_id"])
        parts.append(prediction)
    return Prediction.cat(parts)


def validation_metrics(prediction: Prediction) -> dict[str, float]:
    labels = prediction.labels
    probs = prediction.probs.clamp_min(1e-12)
    return {
        "val_nll": float(-probs[torch.arange(len(labels)), labels].log().mean()),
        "val_acc": float((prediction.predicted == labels).float().mean()),
        "val_uncertainty": float(mean_uncertainty(prediction).mean()),
    }


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    ckpt.atomic_write_text(path, buffer.getvalue())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """Fit one model; ``fit`` returns the history and the path of the best checkpoint."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, out_dir: str | Path, checkpoint_config: dict) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.checkpoint_config = {**checkpoint_config, "train_config": cfg.to_dict()}
        self.dist = DistributedContext.from_environment()
        self.device = self.dist.device if self.dist.enabled else resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.model = model.to(self.device)
        self.train_model = self.dist.wrap(self.model)
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1 and "A_log" not in n]
        no_decay = [p for n, p in self.model.named_parameters() if p.ndim <= 1 or "A_log" in n]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
        )
        self.loss_fn = make_loss(self.model, cfg)

    @property
    def is_main(self) -> bool:
        return self.dist.rank == 0

    def fit(
        self,
        train_set,
        val_set,
        resume: bool = False,
        on_epoch_end: Callable[[int, dict], None] | None = None,
    ) -> FitResult:
        cfg = self.cfg
        labels = dataset_labels(train_set)
        steps_per_epoch = math.ceil(math.ceil(len(labels) / self.dist.world_size) / cfg.batch_size)
        total_steps = steps_per_epoch * cfg.epochs
        warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
        history: list[dict[str, float]] = []
        best_nll, best_epoch, bad_epochs, start_epoch, step = math.inf, -1, 0, 0, 0
        if resume and (self.out / "last" / ckpt.STATE).is_file():
            weights, _, optimizer_state, progress = ckpt.load_training_state(self.out / "last")
            self.model.load_state_dict(weights)
            self.optimizer.load_state_dict(optimizer_state)
            history, step = progress["history"], progress["step"]
            best_nll, best_epoch, bad_epochs = progress["best_nll"], progress["best_epoch"], progress["bad_epochs"]
            start_epoch = progress["epoch"] + 1
        stopped_early = False
        for epoch in range(start_epoch, cfg.epochs):
            if cfg.patience and bad_epochs >= cfg.patience:
                stopped_early = True
                break
            torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout / drop-path draws of this epoch
            started = time.perf_counter()
            order = epoch_indices(labels, epoch, cfg.seed, cfg.balanced_sampling, self.dist.rank, self.dist.world_size)
            train_stats, step = self.train_epoch(train_set, order, epoch, step, total_steps, warmup_steps)
            val = validation_metrics(predict(self.model, val_set, cfg.eval_batch_size, self.device))
            row = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"], **train_stats, **val}
            row["seconds"] = round(time.perf_counter() - started, 3)
            history.append(row)
            improved = val["val_nll"] < best_nll
            if improved:
                best_nll, best_epoch, bad_epochs = val["val_nll"], epoch + 1, 0
            else:
                bad_epochs += 1
            if self.is_main:
                config = {**self.checkpoint_config, "epoch": epoch + 1, "val_metrics": val}
                if improved:
                    ckpt.save_checkpoint(self.out / "checkpoint", self.model, config)
                progress = {"epoch": epoch, "step": step, "history": history, "best_nll": best_nll,
                            "best_epoch": best_epoch, "bad_epochs": bad_epochs}  # fmt: skip
                ckpt.save_training_state(self.out / "last", self.model, config, self.optimizer, progress)
                write_metrics_csv(self.out / "metrics.csv", history)
            self.dist.barrier()
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
        return FitResult(history, best_epoch, self.out / "checkpoint", stopped_early)

    def train_epoch(self, dataset, order, epoch, step, total_steps, warmup_steps) -> tuple[dict[str, float], int]:
        cfg = self.cfg
        self.train_model.train()
        sums = {"loss": 0.0, "correct": 0.0, "uncertainty": 0.0, "n": 0}
        amp = cfg.amp and self.device.type == "cuda"
        epoch_batches = batches(dataset, order, cfg.batch_size)
        with self.progress(len(epoch_batches), f"epoch {epoch + 1}/{cfg.epochs}") as bar:
            for i, batch in enumerate(epoch_batches):
                factor = warmup_cosine(step, total_steps, warmup_steps, cfg.min_lr_ratio)
                for group in self.optimizer.param_groups:
                    group["lr"] = cfg.lr * factor
                target = batch["label"].to(self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
                    prediction = forward_batch(self.train_model, batch, self.device)
                # KL annealing reads the (fractional) epoch; EpochLinear floors it to completed epochs
                fractional_epoch = epoch + i / len(epoch_batches)
                loss = self.loss_fn(prediction.map_tensors(lambda t: t.float()), target, epoch=fractional_epoch)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.optimizer.step()
                step += 1
                n = len(target)
                sums["loss"] += float(loss.detach()) * n
                sums["correct"] += float((prediction.predicted == target).sum())
                sums["uncertainty"] += float(mean_uncertainty(prediction.detach()).sum())
                sums["n"] += n
                bar(
                    loss=sums["loss"] / sums["n"],
                    acc=sums["correct"] / sums["n"],
                    unc=sums["uncertainty"] / sums["n"],
                )
        n = max(1, sums["n"])
        stats = {"train_loss": sums["loss"], "train_acc": sums["correct"], "train_uncertainty": sums["uncertainty"]}
        return {k: v / n for k, v in stats.items()}, step

    def progress(self, total: int, description: str):
        return ProgressBar(total, description, enabled=self.cfg.progress and self.is_main)


class ProgressBar:
    """A rich progress bar showing running loss, accuracy and mean uncertainty (a no-op when disabled)."""

    def __init__(self, total: int, description: str, enabled: bool) -> None:
        self.total, self.description, self.enabled = total, description, enabled
        self.progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=self.total, stats="")
        return self

    def __call__(self, **stats: float) -> None:
        if self.progress is not None:
            text = "  ".join(f"{k} {v:.3f}" for k, v in stats.items())
            self.progress.update(self.task, advance=1, stats=text)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
