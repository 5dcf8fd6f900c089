"""Acquisition-invariant preprocessing of whole exams: each step removes a named part of the camera exactly.

A step is a frozen dataclass with a ``name`` and its parameters; :class:`Preprocessing` composes steps and
serialises to JSON (``to_dict`` / ``from_dict``), so it can travel with a model as its preprocessing record.
Statistics are per exam, over its real frames (``mask``) and inside its field of view; padded frames and
everything outside the FOV come out zero. The claims, each checked in tests against the closed form:

    FieldOfViewMask      x -> a x + b  (a > 0)   the mask is the same; the output is a x with b removed
    PercentileNormalise  linear: x -> a x + b;   power: x -> g x^gamma   (the output is unchanged)
    Standardise          x -> a x + b
    HistogramEqualise    x -> f(x), any strictly increasing f
    FlattenIllumination  x -> s(p) x, log s a polynomial: exactly up to a global gain (which passes through);
                         vignetting and illumination gradients approximately

So ``FieldOfViewMask`` then ``PercentileNormalise(mode="power")`` removes a camera's gain, gamma and black
level, as long as the FOV threshold separates the same pixels (a sharp aperture, as fundus cameras have).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from clearmamba.serialize import fields_from_json


@dataclass(frozen=True)
class ExamView:
    """One exam between steps: ``frames [t, c, h, w]``, ``mask [t]`` (real frames), ``fov [h, w]`` or None."""

    frames: Tensor
    mask: Tensor
    fov: Tensor | None = None

    def inside(self) -> Tensor:
        """Values of the real frames inside the FOV, flattened."""
        real = self.frames[self.mask]  # n c h w
        if self.fov is None:
            return real.reshape(-1)
        return real[..., self.fov].reshape(-1)

    def with_frames(self, frames: Tensor) -> ExamView:
        zero = ~self.mask[:, None, None, None] if self.fov is None else ~(self.mask[:, None, None, None] & self.fov)
        return ExamView(frames.masked_fill(zero, 0.0), self.mask, self.fov)


def _quantile(values: Tensor, q: float) -> Tensor:
    # an order statistic ("lower"), so that quantile(f(x)) = f(quantile(x)) for every increasing f
    return torch.quantile(values.float(), q, interpolation="lower") if values.numel() else values.new_zeros(())


@dataclass(frozen=True)
class FieldOfViewMask:
    """The FOV: pixels whose brightest real frame exceeds lo + ``fraction`` (hi - lo), lo and hi the
    ``low``/``high`` quantiles of that max projection, cleaned by a 3x3 majority vote. With
    ``subtract_background`` the median outside the FOV (the camera's black level) is removed first."""

    name: ClassVar[str] = "fov_mask"
    fraction: float = 0.1
    low: float = 0.02
    high: float = 0.98
    subtract_background: bool = True

    def __post_init__(self) -> None:
        if not (0 < self.fraction < 1 and 0 <= self.low < self.high <= 1):
            raise ValueError(f"FieldOfViewMask: expected 0 < fraction < 1 and 0 <= low < high <= 1, got {self}")

    def estimate(self, frames: Tensor, mask: Tensor) -> Tensor:
        projection = frames[mask].amax(dim=(0, 1))  # h w; max commutes with any increasing map
        lo, hi = _quantile(projection.reshape(-1), self.low), _quantile(projection.reshape(-1), self.high)
        lit = (projection > lo + self.fraction * (hi - lo)).float()[None, None]
        return F.avg_pool2d(lit, 3, stride=1, padding=1, count_include_pad=False)[0, 0] > 0.5

    def __call__(self, view: ExamView) -> ExamView:
        fov = self.estimate(view.frames, view.mask)
        frames = view.frames
        if self.subtract_background and not bool(fov.all()):
            background = _quantile(frames[view.mask][..., ~fov].reshape(-1), 0.5)
            frames = (frames - background).clamp(min=0)
        return ExamView(frames, view.mask, fov).with_frames(frames)


@dataclass(frozen=True)
class PercentileNormalise:
    """``linear``: (x - q_low) / (q_high - q_low), clipped to [0, 1]. ``power``: (x / q_high)^k, clipped, with
    k = log(middle_value) / log(q_middle / q_high), so the ``middle`` quantile lands on ``middle_value``
    whatever the camera's gamma (x -> g x^gamma gives k -> k / gamma, and the output is unchanged)."""

    name: ClassVar[str] = "percentile_normalise"
    mode: str = "power"
    low: float = 0.01
    high: float = 0.99
    middle: float = 0.5
    middle_value: float = 0.3

    def __post_init__(self) -> None:
        if self.mode not in ("linear", "power"):
            raise ValueError(f"PercentileNormalise.mode: expected 'linear' or 'power', got {self.mode!r}")
        if not (0 <= self.low < self.middle < self.high <= 1 and 0 < self.middle_value < 1):
            raise ValueError(f"PercentileNormalise: expected 0 <= low < middle < high <= 1, 0 < middle_value < 1; "
                             f"got {self}")  # fmt: skip

    def __call__(self, view: ExamView) -> ExamView:
        values = view.inside()
        hi = _quantile(values, self.high)
        if self.mode == "linear":
            lo = _quantile(values, self.low)
            return view.with_frames(((view.frames - lo) / (hi - lo).clamp(min=1e-8)).clamp(0, 1))
        if hi <= 0:
            return view.with_frames(torch.zeros_like(view.frames))
        mid = _quantile(values, self.middle)
        ratio = float(mid / hi)
        # k = log(m0) / log(q_mid / q_high); a dark median (or none below the top) leaves the gamma alone
        k = math.log(self.middle_value) / math.log(ratio) if 0 < ratio < 1 else 1.0
        return view.with_frames((view.frames / hi).clamp(0, 1) ** k)


@dataclass(frozen=True)
class Standardise:
    """Per-exam z-score inside the FOV, mapped to ``mean + std * z`` (and clipped to [0, 1] with ``clip``)."""

    name: ClassVar[str] = "standardise"
    mean: float = 0.5
    std: float = 0.2
    clip: bool = True

    def __call__(self, view: ExamView) -> ExamView:
        values = view.inside().double()
        mu, sigma = values.mean(), values.std().clamp(min=1e-8)
        out = (self.mean + self.std * (view.frames.double() - mu) / sigma).float()
        return view.with_frames(out.clamp(0, 1) if self.clip else out)


@dataclass(frozen=True)
class HistogramEqualise:
    """Each pixel becomes its mid-rank among the exam's FOV pixels, over (n + 1): uniform on (0, 1), and the
    same for any strictly increasing tone curve (ties, e.g. clipped pixels, share their average rank)."""

    name: ClassVar[str] = "histogram_equalise"

    def __call__(self, view: ExamView) -> ExamView:
        inside = view.mask[:, None, None, None].expand_as(view.frames)
        if view.fov is not None:
            inside = inside & view.fov
        values = view.frames[inside]
        unique, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
        # rank of a value = (number below) + (count + 1) / 2
        below = torch.cumsum(counts, 0) - counts
        ranks = (below + (counts + 1) / 2).to(torch.float32) / (values.numel() + 1)
        out = torch.zeros_like(view.frames)
        out[inside] = ranks[inverse]
        return view.with_frames(out)


@dataclass(frozen=True)
class FlattenIllumination:
    """Divide by the exam's smooth illumination: a polynomial of degree ``degree`` in (x, y) fitted by least
    squares to the log of the mean real frame inside the FOV, its FOV mean removed. A field s(p) with
    log s a polynomial of that degree is removed exactly up to a global gain, which passes through (for a
    normalisation step after it to remove); vignetting and gradients nearly (1 - v r^2 ~ exp(-v r^2))."""

    name: ClassVar[str] = "flatten_illumination"
    degree: int = 2

    def __post_init__(self) -> None:
        if not 1 <= self.degree <= 4:
            raise ValueError(f"FlattenIllumination.degree: expected 1..4, got {self.degree}")

    def __call__(self, view: ExamView) -> ExamView:
        h, w = view.frames.shape[-2:]
        fov = torch.ones((h, w), dtype=torch.bool) if view.fov is None else view.fov
        mean_frame = view.frames[view.mask].double().mean(dim=(0, 1))
        used = fov & (mean_frame > 0)
        basis = _monomials(h, w, self.degree)  # k h w
        if int(used.sum()) <= basis.shape[0]:
            return view
        # log m(p) ~ sum_j c_j phi_j(p)      (least squares over the FOV)
        design = basis[:, used].T  # n k
        coef = torch.linalg.lstsq(design, mean_frame[used].log()[:, None]).solution[:, 0]
        log_light = torch.einsum("k,khw->hw", coef, basis)
        log_light = log_light - log_light[used].mean()
        return view.with_frames((view.frames.double() * torch.exp(-log_light)).float())


def _monomials(h: int, w: int, degree: int) -> Tensor:
    # x^i y^j for i + j <= degree, on pixel centres in [-1, 1]
    y, x = torch.meshgrid(
        (torch.arange(h, dtype=torch.float64) + 0.5) / h * 2 - 1,
        (torch.arange(w, dtype=torch.float64) + 0.5) / w * 2 - 1,
        indexing="ij",
    )
    return torch.stack([x**i * y**j for i in range(degree + 1) for j in range(degree + 1 - i)])


STEPS = {
    cls.name: cls
    for cls in (FieldOfViewMask, PercentileNormalise, Standardise, HistogramEqualise, FlattenIllumination)
}
PreprocessStep = FieldOfViewMask | PercentileNormalise | Standardise | HistogramEqualise | FlattenIllumination


@dataclass(frozen=True)
class Preprocessing:
    """Steps applied in order to each exam. ``Preprocessing()`` (no steps) is the identity."""

    steps: tuple[PreprocessStep, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        for step in self.steps:
            if type(step) not in STEPS.values():
                raise ValueError(f"Preprocessing: unknown step {step!r}; expected one of {sorted(STEPS)}")

    def __call__(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        """One exam ``frames [t, c, h, w]`` (``mask [t]``, default all real) -> preprocessed frames."""
        if frames.ndim != 4:
            raise ValueError(f"Preprocessing: expected one exam [t, c, h, w], got shape {tuple(frames.shape)}")
        mask = torch.ones(frames.shape[0], dtype=torch.bool) if mask is None else mask.bool()
        if not self.steps:
            return frames
        if not bool(mask.any()):
            return torch.zeros_like(frames)
        view = ExamView(frames.float(), mask)
        for step in self.steps:
            view = step(view)
        return view.frames

    def apply_batch(self, frames: Tensor, mask: Tensor | None = None) -> Tensor:
        """``frames [b, t, c, h, w]``, ``mask [b, t]``: each exam on its own statistics."""
        if mask is None:
            mask = torch.ones(frames.shape[:2], dtype=torch.bool)
        return torch.stack([self(frames[i], mask[i]) for i in range(frames.shape[0])])

    def apply_examset(self, exams):
        """A new ExamSet with preprocessed frames (the input is not modified)."""
        from dataclasses import replace

        return replace(exams, frames=self.apply_batch(exams.frames, exams.mask), info={**exams.info})

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [{"name": step.name, **asdict(step)} for step in self.steps]}

    @classmethod
    def from_dict(cls, record: dict[str, Any], where: str = "preprocessing") -> Preprocessing:
        """Inverse of :meth:`to_dict`; errors name ``where`` (e.g. the checkpoint file) and the field."""
        if not isinstance(record, dict) or not isinstance(record.get("steps"), list):
            raise ValueError(f"{where}: expected {{'steps': [...]}}, got {record!r}")
        steps = []
        for i, entry in enumerate(record["steps"]):
            entry = dict(entry) if isinstance(entry, dict) else {}
            kind = STEPS.get(entry.pop("name", None))
            if kind is None:
                raise ValueError(f"{where}: steps[{i}].name must be one of {sorted(STEPS)}, got {record['steps'][i]!r}")
            steps.append(fields_from_json(kind, entry, f"{where}: steps[{i}] ({kind.name})"))
        return cls(tuple(steps))


# the acquisition-invariant default: FOV (with black level removed), then gain and gamma removed
INVARIANT = Preprocessing((FieldOfViewMask(), PercentileNormalise(mode="power")))


class PreprocessedExams(Dataset):
    """Wrap a Dataset of exam dicts and preprocess each item's frames with its own ``mask``."""

    def __init__(self, exams: Dataset, preprocessing: Preprocessing) -> None:
        self.exams, self.preprocessing = exams, preprocessing

    def __len__(self) -> int:
        return len(self.exams)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.exams[index])
        item["frames"] = self.preprocessing(item["frames"], item["mask"])
        return item
