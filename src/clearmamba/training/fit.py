"""The one training loop: any uncertainty :class:`~clearmamba.uncertainty.methods.Method` on any model.

    method = create_method("evidential", kl_weight=0.05)
    result = fit(method, lambda: create_model("clear_mamba_tiny", num_classes=3), train_exams, TrainConfig(),
                 val=val_exams, callbacks=[EpochLog()])
    prediction = predict(result.model, test_exams)

Per member (one, except for deep ensembles): ``method.prepare`` the model, then per epoch a ``(seed, epoch)``
seeded order, per step the lr schedule, ``method.loss(output, target, epoch=fractional epoch)``, clipping and
the optimiser step; ``method.on_epoch_end`` (SWAG collects there), validation NLL and accuracy, then the
callbacks. After the last epoch ``method.finalize`` and finally ``method.combine`` over the members.

What differs between jobs is a :class:`Callback`: early stopping (:class:`EarlyStopping`), progress
(:class:`EpochLog`, :class:`StepProgress`), evidence statistics (:class:`EvidenceStatistics`) and the run
folder's resumable state (``training.run``). Evaluation stays outside: it is a function of predictions.

Reproducibility: the data order of epoch ``e`` and the global RNG (dropout, drop-path) are seeded from
``(seed, e)``, so resuming after the last completed epoch gives the weights of an uninterrupted run.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from clearmamba.uncertainty import Prediction
from clearmamba.uncertainty.methods import Method
from clearmamba.uncertainty.outputs import as_prediction

from .config import TrainConfig
from .data import TensorSet, as_tensor_set, epoch_indices
from .distributed import DistributedContext
from .optim import build_optimizer, lr_factor
from .predict import predict

HISTORY_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_nll", "val_acc", "seconds")


class Callback:
    """Hooks of :func:`fit`; override what you need. ``state_dict``/``load_state_dict`` make a callback's own
    state part of a resumable run (JSON values plus tensors)."""

    def on_fit_start(self, state: FitState) -> None: ...

    def on_batch_end(self, state: FitState, output: Any, target: Tensor, loss: Tensor) -> None: ...

    def on_epoch_end(self, state: FitState, row: dict[str, float]) -> None: ...

    def on_fit_end(self, state: FitState) -> None: ...

    def state_dict(self) -> tuple[dict, dict[str, Tensor]]:
        return {}, {}

    def load_state_dict(self, values: dict, tensors: dict[str, Tensor]) -> None: ...


@dataclass
class FitState:
    """What callbacks see and may change (``stop``)."""

    cfg: TrainConfig
    method: Method
    model: nn.Module  # the prepared member being trained (unwrapped)
    optimizer: torch.optim.Optimizer
    member: int
    num_members: int
    train_size: int
    val_size: int
    steps_per_epoch: int
    total_steps: int
    epoch: int = 0  # 0-based epoch in progress (or just finished, in on_epoch_end)
    step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    stop: bool = False
    stop_reason: str = ""
    callbacks: list[Callback] = field(default_factory=list)  # all of fit's callbacks, in order

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)


@dataclass
class ResumePoint:
    """The state after a completed epoch: model and optimiser, progress, and each callback's state."""

    weights: dict[str, Tensor]
    optimizer: dict
    epoch: int  # completed epochs
    step: int
    history: list[dict[str, float]]
    callbacks: dict[str, tuple[dict, dict[str, Tensor]]]  # callback key (callback_keys) -> its state_dict


@dataclass
class FitResult:
    model: nn.Module  # the combined, finalised model (eval mode)
    members: list[nn.Module]
    history: list[list[dict[str, float]]]  # per member
    best_epoch: int | None  # of member 0, when early stopping watched validation
    stopped_early: bool
    seconds: float


def callback_keys(callbacks: Sequence[Callback]) -> list[str]:
    """A stable name per callback (class name, numbered when repeated) for saving and restoring their state."""
    seen: dict[str, int] = {}
    keys = []
    for callback in callbacks:
        name = type(callback).__name__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


def validation_metrics(prediction: Prediction, labels: Tensor) -> dict[str, float]:
    # NLL = -mean log p(y | x)
    probs = prediction.probs.clamp_min(1e-12)
    return {
        "val_nll": float(-probs[torch.arange(len(labels)), labels].log().mean()),
        "val_acc": float((prediction.predicted == labels).float().mean()),
    }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def fit(
    method: Method,
    build_model: Callable[[], nn.Module],
    train,
    cfg: TrainConfig,
    val=None,
    callbacks: Sequence[Callback] = (),
    resume: ResumePoint | None = None,
    augment: Callable[[tuple[Tensor, ...], torch.Generator], tuple[Tensor, ...]] | None = None,
) -> FitResult:
    """Train ``method.num_members`` models built by ``build_model()`` (member m after ``manual_seed(seed + m)``)
    on ``train`` (ExamSet, TensorSet or ``(inputs, labels)``), validating on ``val`` each epoch.

    ``augment(inputs, generator)`` transforms each training batch (e.g. random cameras); its generator is seeded
    per step, so augmentation is reproducible and resumable. ``resume`` continues a single-member run."""
    started = time.perf_counter()
    train_set = as_tensor_set(train)
    val_set = as_tensor_set(val) if val is not None else None
    if resume is not None and method.num_members != 1:
        raise ValueError(f"resume: only single-model methods resume; {method.name} trains {method.num_members}")
    dist = DistributedContext.from_environment()
    device = dist.device if dist.enabled else resolve_device(cfg.device)
    members, histories = [], []
    best_epoch, stopped_early = None, False
    num_classes = int(train_set.labels.max()) + 1
    for member in range(method.num_members):
        torch.manual_seed(cfg.seed + member)
        model = method.prepare(build_model(), num_classes=num_classes, dataset_size=len(train_set)).to(device)
        seed = cfg.seed + member
        state = _train_member(method, model, train_set, val_set, cfg.with_(seed=seed), member, callbacks, dist,
                              device, resume, augment)  # fmt: skip
        early = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
        if member == 0:
            best_epoch = early.best_epoch if early is not None and early.best_epoch > 0 else None
            stopped_early = state.stop
        loader = [batch[0] if len(batch) == 1 else batch for batch in _input_batches(train_set, cfg.eval_batch_size)]
        members.append(method.finalize(model.eval(), loader))
        histories.append(state.history)
    combined = method.combine(members).eval()
    return FitResult(combined, members, histories, best_epoch, stopped_early, time.perf_counter() - started)


def _input_batches(data: TensorSet, batch_size: int) -> list[tuple[Tensor, ...]]:
    return [tuple(x[i : i + batch_size] for x in data.inputs) for i in range(0, len(data), batch_size)]


def _train_member(method, model, train_set: TensorSet, val_set, cfg: TrainConfig, member, callbacks, dist, device,
                  resume, augment) -> FitState:  # fmt: skip
    per_rank = math.ceil(len(train_set) / dist.world_size)
    steps_per_epoch = max(1, math.ceil(per_rank / cfg.batch_size))
    total_steps = max(1, round(cfg.epochs * steps_per_epoch))
    optimizer = build_optimizer(model, cfg)
    state = FitState(cfg, method, model, optimizer, member, method.num_members, len(train_set),
                     len(val_set) if val_set is not None else 0, steps_per_epoch, total_steps,
                     callbacks=list(callbacks))  # fmt: skip
    if resume is not None:
        model.load_state_dict(resume.weights)
        optimizer.load_state_dict(resume.optimizer)
        state.epoch, state.step, state.history = resume.epoch, resume.step, list(resume.history)
        for key, callback in zip(callback_keys(callbacks), callbacks):
            if key in resume.callbacks:
                callback.load_state_dict(*resume.callbacks[key])
    train_model = dist.wrap(model)
    for callback in callbacks:
        callback.on_fit_start(state)
    amp = cfg.amp and device.type == "cuda"
    for epoch in range(state.epoch, state.num_epochs):
        if state.stop:
            break
        state.epoch = epoch
        tic = time.perf_counter()
        torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout / drop-path draws of this epoch
        order = epoch_indices(train_set.labels, epoch, cfg.seed, cfg.balanced_sampling, dist.rank, dist.world_size)
        steps = min(steps_per_epoch, total_steps - epoch * steps_per_epoch)
        train_model.train()
        sums = {"loss": 0.0, "correct": 0.0, "n": 0}
        for i in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(cfg, state.step, total_steps, steps_per_epoch)
            inputs, target = train_set.take(order[i * cfg.batch_size : (i + 1) * cfg.batch_size])
            if augment is not None:
                inputs = augment(inputs, torch.Generator().manual_seed(cfg.seed * 1_000_003 + state.step))
            inputs, target = tuple(x.to(device) for x in inputs), target.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                output = train_model(*inputs)
            if isinstance(output, Prediction):
                output = output.map_tensors(lambda t: t.float())
            # the loss reads the fractional epoch (KL annealing); schedules floor it where they need to
            loss = method.loss(output, target, epoch=epoch + i / steps_per_epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            state.step += 1
            n = len(target)
            sums["loss"] += float(loss.detach()) * n
            sums["correct"] += float((as_prediction(output).predicted == target).sum())
            sums["n"] += n
            for callback in callbacks:
                callback.on_batch_end(state, output, target, loss)
        method.on_epoch_end(model, epoch, state.num_epochs)
        n = max(1, sums["n"])
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"], "train_loss": sums["loss"] / n,
               "train_acc": sums["correct"] / n}  # fmt: skip
        if val_set is not None:
            val_prediction = predict(model, val_set, cfg.eval_batch_size, device)
            row.update(validation_metrics(val_prediction, val_set.labels))
        row["seconds"] = round(time.perf_counter() - tic, 3)
        state.history.append(row)
        for callback in callbacks:
            callback.on_epoch_end(state, row)
        dist.barrier()
    for callback in callbacks:
        callback.on_fit_end(state)
    return state


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a lower validation NLL (0: never stop); at the end, restore the
    weights of the best epoch either way."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best_nll, self.best_epoch, self.bad_epochs = math.inf, 0, 0
        self.best_weights: dict[str, Tensor] | None = None

    def on_fit_start(self, state: FitState) -> None:
        if state.val_size == 0:
            raise ValueError("EarlyStopping: needs a validation set (fit(..., val=...))")
        if state.epoch == 0:  # a new member; a resumed one keeps what load_state_dict restored
            self.best_nll, self.best_epoch, self.bad_epochs, self.best_weights = math.inf, 0, 0, None

    def on_epoch_end(self, state: FitState, row: dict[str, float]) -> None:
        if row["val_nll"] < self.best_nll:
            self.best_nll, self.best_epoch, self.bad_epochs = row["val_nll"], int(row["epoch"]), 0
            self.best_weights = copy.deepcopy({k: v.detach().cpu() for k, v in state.model.state_dict().items()})
        else:
            self.bad_epochs += 1
        if self.patience and self.bad_epochs >= self.patience and row["epoch"] < state.num_epochs:
            state.stop = True
            state.stop_reason = f"early stop at epoch {int(row['epoch'])} (best {self.best_epoch})"

    def on_fit_end(self, state: FitState) -> None:
        if self.best_weights is not None:
            state.model.load_state_dict(self.best_weights)

    def state_dict(self) -> tuple[dict, dict[str, Tensor]]:
        values = {"best_nll": self.best_nll, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}
        return values, {f"best.{k}": v for k, v in (self.best_weights or {}).items()}

    def load_state_dict(self, values: dict, tensors: dict[str, Tensor]) -> None:
        self.best_nll, self.best_epoch, self.bad_epochs = values["best_nll"], values["best_epoch"], values["bad_epochs"]
        best = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
        self.best_weights = best or None


class EpochLog(Callback):
    """One line per epoch (train and validation loss and accuracy, lr, seconds), the split sizes at start and
    the early-stop line; a live rich bar during each epoch when ``live`` (stdout is a terminal)."""

    def __init__(self, name: str = "", log: Callable[[str], None] = print, live: bool = False) -> None:
        self.name, self.log, self.live = name, log, live
        self.bar = None

    def on_fit_start(self, state: FitState) -> None:
        who = f"{self.name}: " if self.name else ""
        member = f" (member {state.member + 1}/{state.num_members})" if state.num_members > 1 else ""
        self.log(f"{who}training on {state.train_size} exams, validating on {state.val_size}{member}; "
                 f"{state.num_epochs} epochs of {state.steps_per_epoch} steps")

    def on_batch_end(self, state, output, target, loss) -> None:
        if not self.live:
            return
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=True)  # fmt: skip
            self.bar.start()
            self.task = self.bar.add_task(f"epoch {state.epoch + 1}/{state.num_epochs}", total=state.steps_per_epoch)
        self.bar.update(self.task, advance=1)

    def on_epoch_end(self, state: FitState, row: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        val = f" | val nll {row['val_nll']:.3f} acc {row['val_acc']:.3f}" if "val_nll" in row else ""
        who = f"{self.name} " if self.name else ""
        self.log(f"{who}epoch {int(row['epoch'])}/{state.num_epochs}: train loss {row['train_loss']:.3f} acc "
                 f"{row['train_acc']:.3f}{val} | lr {row['lr']:.2e} | {row['seconds']:.1f} s")
        if state.stop and state.stop_reason:
            self.log(f"{self.name + ': ' if self.name else ''}{state.stop_reason}")


class StepProgress(Callback):
    """Advance a rich ``Progress`` task by one per optimiser step (the experiments' one bar per network)."""

    def __init__(self, progress, description: str) -> None:
        self.progress, self.description, self.task = progress, description, None

    def on_fit_start(self, state: FitState) -> None:
        self.task = self.progress.add_task(self.description, total=state.total_steps - state.step)

    def on_batch_end(self, state, output, target, loss) -> None:
        self.progress.advance(self.task, 1)


class EvidenceStatistics(Callback):
    """labml's ``TrackStatistics`` per epoch, added to the history row: training accuracy, mean max p and mean
    K/S, each split by right and wrong answers (``p_right``, ``u_wrong``, ...)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def _add(self, name: str, values: Tensor) -> None:
        self.sums[name] = self.sums.get(name, 0.0) + float(values.sum())
        self.counts[name] = self.counts.get(name, 0) + values.numel()

    @torch.no_grad()
    def on_batch_end(self, state, output, target, loss) -> None:
        prediction = as_prediction(output)
        correct = prediction.predicted == target
        self._add("accuracy", correct.float())
        for tag, mask in (("right", correct), ("wrong", ~correct)):
            self._add(f"p_{tag}", prediction.confidence[mask])
            if prediction.evidence is not None:
                self._add(f"u_{tag}", prediction.score("vacuity")[mask])  # u = K / S

    def on_epoch_end(self, state: FitState, row: dict[str, float]) -> None:
        row.update({k: self.sums[k] / self.counts[k] if self.counts[k] else float("nan") for k in self.sums})
        self.sums, self.counts = {}, {}
