"""Families of cameras: the training range of every camera parameter, the held-out cameras outside it, and
camera augmentation (one random training camera per exam).

A :class:`CameraFamily` gives each shift parameter of :class:`~clearmamba.data.cameras.Camera` a closed range;
a camera belongs to the family when every parameter lies in its range. ``TRAINING_FAMILY`` holds the
simulator's training devices A-D and is what augmentation draws from. Every camera of ``HELDOUT_CAMERAS``
(and ``device_E``) has at least ``MIN_OUTSIDE`` = 3 parameters outside their training ranges, by at least
``MARGIN`` of the plausible envelope's width, so it differs from every training camera in those parameters;
:func:`check_heldout` checks this and :func:`sample_heldout` draws new such cameras from ``ENVELOPE``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from clearmamba.data.cameras import BOUNDS, Camera
from clearmamba.data.devices import DEFAULT_DEVICES

# the parameters a family constrains: all but the name, the fixed-pattern seed and the gradient's direction
SHIFT_PARAMETERS = tuple(f.name for f in fields(Camera) if f.name not in ("name", "pattern_seed", "gradient_angle"))
MIN_OUTSIDE = 3
MARGIN = 0.05

Range = tuple[float, float]


@dataclass(frozen=True)
class CameraFamily:
    """A closed range ``(low, high)`` per shift parameter; the defaults pin each to the neutral camera."""

    name: str
    gain: Range = (1.0, 1.0)
    black_level: Range = (0.0, 0.0)
    gamma: Range = (1.0, 1.0)
    contrast: Range = (0.0, 0.0)
    noise: Range = (0.02, 0.02)
    banding: Range = (0.0, 0.0)
    fixed_pattern: Range = (0.0, 0.0)
    blur: Range = (0.0, 0.0)
    resolution: Range = (1.0, 1.0)
    zoom: Range = (1.0, 1.0)
    vignetting: Range = (0.15, 0.15)
    gradient: Range = (0.0, 0.0)
    fov_radius: Range = (0.94, 0.94)
    fov_aspect: Range = (1.0, 1.0)
    fov_shift_x: Range = (0.0, 0.0)
    fov_shift_y: Range = (0.0, 0.0)
    fov_crop: Range = (0.0, 0.0)
    jpeg_quality: Range = (100, 100)

    def __post_init__(self) -> None:
        for key in SHIFT_PARAMETERS:
            value = getattr(self, key)
            if not (isinstance(value, (tuple, list)) and len(value) == 2):
                raise ValueError(f"CameraFamily {self.name!r}: {key} must be a (low, high) pair, got {value!r}")
            low, high = float(value[0]), float(value[1])
            bound_low, bound_high = BOUNDS[key]
            if not bound_low <= low <= high <= bound_high:
                raise ValueError(
                    f"CameraFamily {self.name!r}: {key} = {value!r}, expected low <= high within [{bound_low}, "
                    f"{bound_high}]"
                )
            object.__setattr__(self, key, (low, high))

    def range(self, parameter: str) -> Range:
        if parameter not in SHIFT_PARAMETERS:
            raise ValueError(f"CameraFamily: unknown parameter {parameter!r}; expected one of {SHIFT_PARAMETERS}")
        return getattr(self, parameter)

    def outside(self, camera: Camera, margin: float = 0.0, envelope: CameraFamily | None = None) -> tuple[str, ...]:
        """Parameters of ``camera`` outside their range, by more than ``margin`` x the ``envelope``'s width
        (default :data:`ENVELOPE`) when ``margin`` > 0."""
        envelope = envelope or ENVELOPE
        out = []
        for key in SHIFT_PARAMETERS:
            low, high = self.range(key)
            env_low, env_high = envelope.range(key)
            slack = margin * (env_high - env_low)
            value = getattr(camera, key)
            if value < low - slack or value > high + slack:
                out.append(key)
        return tuple(out)

    def contains(self, camera: Camera) -> bool:
        return not self.outside(camera)

    def sample(self, generator: torch.Generator | None = None, name: str | None = None) -> Camera:
        """A camera with every parameter uniform in its range (jpeg quality: uniform integer)."""
        draw = torch.rand(len(SHIFT_PARAMETERS) + 1, generator=generator, dtype=torch.float64).tolist()
        values: dict[str, Any] = {}
        for key, u in zip(SHIFT_PARAMETERS, draw):
            low, high = self.range(key)
            values[key] = low + u * (high - low)
        low, high = self.jpeg_quality
        values["jpeg_quality"] = min(int(low + draw[-2] * (high - low + 1)), int(high))
        values["gradient_angle"] = 2 * math.pi * draw[-1] - math.pi
        values["pattern_seed"] = int(torch.randint(0, 2**31 - 1, (), generator=generator))
        return Camera(name=name or f"{self.name}_camera", **values)

    def to_dict(self) -> dict:
        return {"name": self.name, **{key: list(self.range(key)) for key in SHIFT_PARAMETERS}}


# the range of every parameter augmentation draws from; it holds the simulator's training devices A-D
TRAINING_FAMILY = CameraFamily(
    "training",
    gain=(0.8, 1.15), black_level=(0.0, 0.03), gamma=(0.8, 1.25), contrast=(-0.25, 0.25),
    noise=(0.01, 0.04), banding=(0.0, 0.008), fixed_pattern=(0.0, 0.008),
    blur=(0.0, 0.9), resolution=(0.7, 1.0), zoom=(0.95, 1.08),
    vignetting=(0.05, 0.35), gradient=(0.0, 0.15),
    fov_radius=(0.88, 0.97), fov_aspect=(0.95, 1.05), fov_shift_x=(-0.04, 0.04), fov_shift_y=(-0.04, 0.04),
    fov_crop=(0.0, 0.05), jpeg_quality=(70, 100),
)  # fmt: skip

# what a fundus camera plausibly does: the space held-out cameras are drawn from
ENVELOPE = CameraFamily(
    "envelope",
    gain=(0.4, 2.0), black_level=(0.0, 0.15), gamma=(0.45, 2.2), contrast=(-0.9, 0.9),
    noise=(0.0, 0.12), banding=(0.0, 0.05), fixed_pattern=(0.0, 0.05),
    blur=(0.0, 3.0), resolution=(0.3, 1.0), zoom=(0.95, 1.4),
    vignetting=(0.0, 0.7), gradient=(0.0, 0.6),
    fov_radius=(0.65, 1.1), fov_aspect=(0.75, 1.3), fov_shift_x=(-0.18, 0.18), fov_shift_y=(-0.18, 0.18),
    fov_crop=(0.0, 0.3), jpeg_quality=(8, 100),
)  # fmt: skip

TRAINING_DEVICES = tuple(Camera.from_device(d) for d in DEFAULT_DEVICES if d.name != "device_E")
DEVICE_E = Camera.from_device(next(d for d in DEFAULT_DEVICES if d.name == "device_E"))

# held-out cameras; the comment names the parameters outside the training ranges. None magnifies less than
# the training range: the simulated retina ends at the template's edge, which a wide-field camera would show
HELDOUT_CAMERAS = (
    Camera("overexposed", gain=1.45, gamma=0.62, black_level=0.06),  # tone
    Camera("underexposed_flat", gain=0.55, gamma=1.6, contrast=-0.7),  # tone
    Camera("noisy_banded", noise=0.08, banding=0.03, fixed_pattern=0.03, pattern_seed=7),  # structured noise
    Camera("soft_lowres", blur=1.8, resolution=0.45, noise=0.05),  # optics + noise, like device_E
    Camera("jpeg_lowres", jpeg_quality=25, resolution=0.55, blur=1.2),  # compression + optics
    Camera("offcentre_small", fov_radius=0.82, fov_shift_x=0.12, fov_shift_y=-0.1),  # aperture size, position
    Camera("cropped_elliptic", fov_radius=0.8, fov_aspect=0.82, fov_crop=0.18),  # aperture shape
    Camera("uneven_light", gain=0.7, vignetting=0.6, gradient=0.45, gradient_angle=0.6),  # illumination
    Camera("telephoto_contrast", zoom=1.25, contrast=0.7, black_level=0.07),  # magnification + tone
    Camera("mild_mixed", gain=1.26, gamma=0.7, blur=1.12, vignetting=0.42),  # four, each just outside
)
HELDOUT_WITH_DEVICE_E = (*HELDOUT_CAMERAS, DEVICE_E)

# the ideal camera: no optics, noise, vignetting or aperture. Exams rendered through it and then augmented
# with a family camera are seen through exactly that camera (a camera applied on top of a device compounds)
IDEAL_CAMERA = Camera("ideal", noise=0.0, vignetting=0.0, fov_radius=1.5)


def check_heldout(
    cameras, family: CameraFamily = TRAINING_FAMILY, min_outside: int = MIN_OUTSIDE, margin: float = MARGIN
) -> dict[str, tuple[str, ...]]:
    """The parameters of each camera outside ``family``; raises ValueError naming every camera with fewer
    than ``min_outside`` of them (or a repeated name)."""
    names = [c.name for c in cameras]
    if len(set(names)) != len(names):
        raise ValueError(f"held-out cameras: repeated names in {names}")
    outside = {c.name: family.outside(c, margin) for c in cameras}
    bad = {name: out for name, out in outside.items() if len(out) < min_outside}
    if bad:
        raise ValueError(
            f"held-out cameras must have >= {min_outside} parameters outside the {family.name!r} ranges "
            f"(margin {margin}); these do not: {bad}"
        )
    return outside


def sample_heldout(
    generator: torch.Generator | None = None,
    name: str = "heldout",
    family: CameraFamily = TRAINING_FAMILY,
    envelope: CameraFamily = ENVELOPE,
    min_outside: int = MIN_OUTSIDE,
    max_outside: int = 5,
    margin: float = MARGIN,
) -> Camera:
    """A random camera with ``min_outside``..``max_outside`` parameters drawn from the envelope outside the
    family's ranges (beyond ``margin`` x the envelope width), the others from the family."""
    base = family.sample(generator, name=name)
    candidates = []  # (parameter, [(low, high) pieces of the envelope outside the family])
    for key in SHIFT_PARAMETERS:
        low, high = family.range(key)
        env_low, env_high = envelope.range(key)
        slack = margin * (env_high - env_low)
        pieces = [(a, b) for a, b in ((env_low, low - slack), (high + slack, env_high)) if b > a]
        if pieces:
            candidates.append((key, pieces))
    if len(candidates) < min_outside:
        raise ValueError(f"sample_heldout: only {len(candidates)} parameters can leave the family's ranges")
    k = int(torch.randint(min_outside, min(max_outside, len(candidates)) + 1, (), generator=generator))
    chosen = torch.randperm(len(candidates), generator=generator)[:k].tolist()
    values: dict[str, Any] = {}
    for index in chosen:
        key, pieces = candidates[index]
        lengths = np.array([b - a for a, b in pieces])
        u = float(torch.rand((), generator=generator, dtype=torch.float64)) * lengths.sum()
        piece = int(np.searchsorted(np.cumsum(lengths), u, side="right").clip(max=len(pieces) - 1))
        a, _ = pieces[piece]
        value = a + u - (lengths[:piece].sum())
        values[key] = int(round(value)) if key == "jpeg_quality" else float(value)
    camera = replace(base, **values)
    check_heldout([camera], family, min_outside, margin * 0.99)  # rounding of jpeg quality aside
    return camera


# ----------------------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class CameraAugment:
    """Each exam through one random camera of ``family`` (with ``probability``; otherwise unchanged)."""

    family: CameraFamily = TRAINING_FAMILY
    probability: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1:
            raise ValueError(f"CameraAugment.probability: expected a value in [0, 1], got {self.probability}")

    def draw(self, generator: torch.Generator | None = None) -> Camera | None:
        if float(torch.rand((), generator=generator)) >= self.probability:
            return None
        return self.family.sample(generator)

    def __call__(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``frames [t, c, h, w]`` (or any ``[..., h, w]``) of one exam, all through the same camera."""
        camera = self.draw(generator)
        return frames if camera is None else camera.apply(frames, generator)


class CameraAugmentedExams(Dataset):
    """Wrap a Dataset of exam dicts; each item's frames go through a camera drawn for that (exam, epoch).

    Deterministic given ``generator``: one base seed is drawn from it, and item ``i`` at epoch ``e`` uses its
    own generator seeded from (base, e, i), so the result does not depend on the order items are read in or
    on DataLoader workers. Call :meth:`set_epoch` each epoch for new cameras (like ``DistributedSampler``).
    Padded frames (``mask`` False) stay zero. Wrap exams rendered through :data:`IDEAL_CAMERA` for each exam
    to be seen through exactly a family camera; on frames a device already degraded, the two compound (e.g.
    blur 0.8 then 0.9 is about blur 1.2, and gains multiply), reaching past the family's ranges.
    """

    def __init__(
        self, exams: Dataset, augment: CameraAugment | None = None, generator: torch.Generator | None = None
    ) -> None:
        self.exams = exams
        self.augment = augment or CameraAugment()
        self.base_seed = int(torch.randint(0, 2**62, (), generator=generator))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.exams)  # type: ignore[arg-type]

    def item_generator(self, index: int) -> torch.Generator:
        seed = np.random.SeedSequence([self.base_seed, self.epoch, int(index)]).generate_state(2, np.uint32)
        return torch.Generator().manual_seed(int(seed[0]) << 32 | int(seed[1]))

    def camera_for(self, index: int) -> Camera | None:
        """The camera item ``index`` is seen through at the current epoch (None: left unchanged)."""
        return self.augment.draw(self.item_generator(index))

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.exams[index])
        generator = self.item_generator(index)
        camera = self.augment.draw(generator)
        if camera is not None:
            item["frames"] = camera.apply(item["frames"], generator) * item["mask"][:, None, None, None]
        return item
