"""Camera models: how a fundus camera turns the ideal angiogram into the frames a model sees.

A :class:`Camera` is a frozen dataclass of physical parameters. ``camera.apply(frames, generator)`` degrades
``frames [..., h, w]`` (values in [0, 1]; every leading axis, frames and channels alike, gets the same
camera) in the order of the light path, each step skipped when its parameter is neutral:

    x <- M_h x M_w^T                         optics: magnification (zoom), Gaussian blur, sensor resolution
    x <- x * gain * (1 - v r^2) * ramp       vignetting about the FOV centre, linear illumination gradient
    x <- clip(x)^gamma;  x <- x + c (x^2 (3 - 2x) - x)      tone: gamma, then an S-shaped contrast curve
    x <- x + noise * sqrt(x + 0.05) * eps    signal-dependent noise (eps ~ N(0, 1) per pixel and frame)
    x <- x * fov + black_level + rows + columns             aperture (shape, position), pedestal, banding
    x <- jpeg(clip(x), quality)              lossy compression: 8-bit blockwise DCT quantisation

With the extra steps neutral this is exactly :func:`clearmamba.data.devices.apply_device` (same arithmetic,
same noise stream), so every ``DeviceProfile`` is a ``Camera`` (:meth:`Camera.from_device`). Only the noise
(``noise``, ``banding``) differs between frames; everything else is one fixed function of the pixel grid, so
each exam seen through one camera has all its frames degraded alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np
import torch
from einops import rearrange
from torch import Tensor

from clearmamba.data.devices import DeviceProfile, blur_resolution_matrix
from clearmamba.serialize import fields_from_json

# physical bounds of each parameter (a camera outside them is a typo, not a camera)
BOUNDS: dict[str, tuple[float, float]] = {
    "gain": (0.05, 10.0),
    "black_level": (0.0, 0.5),
    "gamma": (0.1, 5.0),
    "contrast": (-1.0, 1.0),  # the curve stays monotone on [-2, 1]
    "noise": (0.0, 0.5),
    "banding": (0.0, 0.5),
    "fixed_pattern": (0.0, 0.5),
    "blur": (0.0, 10.0),
    "resolution": (0.05, 1.0),
    "zoom": (0.5, 2.0),
    "vignetting": (0.0, 1.0),
    "gradient": (0.0, 1.0),
    "gradient_angle": (-2 * math.pi, 2 * math.pi),
    "fov_radius": (0.2, 1.5),
    "fov_aspect": (0.5, 2.0),
    "fov_shift_x": (-0.5, 0.5),
    "fov_shift_y": (-0.5, 0.5),
    "fov_crop": (0.0, 0.8),
    "jpeg_quality": (1, 100),
}
SIMULATOR_FOV_RADIUS = 0.94  # anatomy.field_of_view's default aperture


@dataclass(frozen=True)
class Camera:
    """A fundus camera: tone curve, noise, optics, illumination, aperture and compression.

    Units: image coordinates run over [-1, 1] (x right, y down); ``blur`` is a Gaussian sigma in pixels at
    64 px; ``resolution`` is the sensor's size relative to the frame; ``zoom`` > 1 magnifies the retina;
    ``fov_aspect`` is the aperture's vertical over horizontal radius; ``fov_crop`` cuts that fraction of the
    vertical radius off the top and bottom; ``jpeg_quality`` 100 means uncompressed.
    """

    name: str
    gain: float = 1.0
    black_level: float = 0.0
    gamma: float = 1.0
    contrast: float = 0.0
    noise: float = 0.02
    banding: float = 0.0  # std of per-row offsets, drawn per frame
    fixed_pattern: float = 0.0  # std of per-column offsets, fixed for the camera (its own pattern_seed)
    pattern_seed: int = 0
    blur: float = 0.0
    resolution: float = 1.0
    zoom: float = 1.0
    vignetting: float = 0.15
    gradient: float = 0.0  # illumination changes by +-gradient across the frame
    gradient_angle: float = 0.0  # direction of the gradient, radians
    fov_radius: float = SIMULATOR_FOV_RADIUS
    fov_aspect: float = 1.0
    fov_shift_x: float = 0.0
    fov_shift_y: float = 0.0
    fov_crop: float = 0.0
    jpeg_quality: int = 100

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Camera.name: expected a non-empty string, got {self.name!r}")
        for key, (low, high) in BOUNDS.items():
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"Camera {self.name!r}: {key} = {value!r}, expected a number in [{low}, {high}]")
        for key in ("jpeg_quality", "pattern_seed"):
            if not isinstance(getattr(self, key), int):
                raise ValueError(f"Camera {self.name!r}: {key} must be an integer, got {getattr(self, key)!r}")

    # ---- records -------------------------------------------------------------------------------
    @classmethod
    def from_device(cls, device: DeviceProfile) -> Camera:
        """The camera that degrades exactly like ``apply_device(x, device, fov)`` with the simulator's FOV."""
        return cls(
            name=device.name, gain=device.gain, gamma=device.gamma, noise=device.noise, blur=device.blur,
            vignetting=device.vignetting, resolution=device.resolution,
        )  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict, where: str = "camera") -> Camera:
        """Inverse of :meth:`to_dict`; ``where`` names the record in error messages (e.g. a file)."""
        return fields_from_json(cls, record, where, noun="camera ")

    def differs_from(self, other: Camera) -> tuple[str, ...]:
        """Names of the parameters whose values differ (``name`` aside)."""
        keys = [f.name for f in fields(self) if f.name != "name"]
        return tuple(k for k in keys if getattr(self, k) != getattr(other, k))

    # ---- the light path ------------------------------------------------------------------------
    def apply(self, frames: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Degrade ``frames [..., h, w]`` (a new tensor; the input is not modified)."""
        if frames.ndim < 2:
            raise ValueError(f"Camera.apply: expected frames [..., h, w], got shape {tuple(frames.shape)}")
        h, w = frames.shape[-2:]
        x = frames.to(torch.float32)
        x = _optics(self.zoom, self.blur, self.resolution, h) @ x @ _optics(self.zoom, self.blur, self.resolution, w).T
        x = x * self._illumination(h, w)
        x = x.clamp_(0, 1)
        if self.gamma != 1.0:
            x = x.pow_(self.gamma)
        if self.contrast != 0.0:
            x = x + self.contrast * (x * x * (3 - 2 * x) - x)  # smoothstep blend: an S-curve for c > 0
        noise = torch.randn(x.shape, generator=generator)
        x = x.addcmul_(noise, torch.sqrt(x + 0.05), value=self.noise)
        x = x * self._aperture(h, w)
        if self.black_level != 0.0:
            x = x + self.black_level
        if self.banding > 0:
            x = x + self.banding * torch.randn((*x.shape[:-1], 1), generator=generator)
        if self.fixed_pattern > 0:
            pattern = torch.randn(w, generator=torch.Generator().manual_seed(self.pattern_seed))
            x = x + self.fixed_pattern * pattern
        x = x.clamp_(0, 1)
        if self.jpeg_quality < 100:
            x = jpeg_compress(x, self.jpeg_quality)
        return x

    def optics(self, size: int) -> Tensor:
        """``[size, size]`` matrix of one image axis: magnification, then blur and sensor resolution."""
        return _optics(self.zoom, self.blur, self.resolution, size).clone()

    def illumination(self, h: int, w: int) -> Tensor:
        """``[h, w]`` multiplicative field: gain, vignetting about the FOV centre, illumination gradient."""
        return self._illumination(h, w).clone()

    def aperture(self, h: int, w: int) -> Tensor:
        """``[h, w]`` soft field-of-view mask: an ellipse, optionally cropped top and bottom, shifted."""
        return self._aperture(h, w).clone()

    # cached and shared: never modified in place
    def _illumination(self, h: int, w: int) -> Tensor:
        return _illumination(
            self.gain, self.vignetting, self.gradient, self.gradient_angle, self.fov_shift_x, self.fov_shift_y, h, w
        )

    def _aperture(self, h: int, w: int) -> Tensor:
        return _aperture(self.fov_radius, self.fov_aspect, self.fov_shift_x, self.fov_shift_y, self.fov_crop, h, w)


def _axis(size: int) -> Tensor:
    return (torch.arange(size) + 0.5) / size * 2 - 1  # pixel centres on [-1, 1], as apply_device


@lru_cache(maxsize=256)
def _optics(zoom: float, blur: float, resolution: float, size: int) -> Tensor:
    sensor = blur_resolution_matrix(blur, resolution, size)
    return sensor if zoom == 1.0 else sensor @ magnification_matrix(zoom, size)


def magnification_matrix(zoom: float, size: int) -> Tensor:
    """``[size, size]`` linear-interpolation matrix of ``out(u) = in(u / zoom)`` about the centre (zeros
    beyond the frame)."""
    source = (_axis(size).double() / zoom + 1) / 2 * size - 0.5  # source pixel index of each output pixel
    left = torch.floor(source)
    frac = source - left
    matrix = torch.zeros((size, size), dtype=torch.float64)
    rows = torch.arange(size)
    for offset, weight in ((0, 1 - frac), (1, frac)):
        col = left.long() + offset
        ok = (col >= 0) & (col < size)
        matrix[rows[ok], col[ok]] += weight[ok]
    return matrix.float()


@lru_cache(maxsize=256)
def _illumination(gain, vignetting, gradient, angle, cx, cy, h, w) -> Tensor:
    ax, ay = _axis(w), _axis(h)
    r2 = (ax[None, :] - cx) ** 2 + (ay[:, None] - cy) ** 2
    field = (1 - vignetting * r2.clamp(max=1)) * gain
    if gradient != 0.0:
        # ramp = 1 + g (x cos a + y sin a), never negative
        field = field * (1 + gradient * (math.cos(angle) * ax[None, :] + math.sin(angle) * ay[:, None])).clamp(min=0)
    return field


@lru_cache(maxsize=256)
def _aperture(radius, aspect, cx, cy, crop, h, w) -> Tensor:
    # the same soft edge (one pixel wide) as anatomy.field_of_view, computed in float64 like it
    size = min(h, w)
    x, y = np.meshgrid((np.arange(w) + 0.5) / w * 2 - 1, (np.arange(h) + 0.5) / h * 2 - 1, indexing="xy")
    distance = np.hypot(x - cx, (y - cy) / aspect)
    mask = np.clip((radius - distance) * size / 2 + 0.5, 0, 1)
    if crop > 0:
        half_height = (1 - crop) * radius * aspect
        mask = mask * np.clip((half_height - np.abs(y - cy)) * size / 2 + 0.5, 0, 1)
    return torch.from_numpy(mask.astype(np.float32))


# ----------------------------------------------------------------------------------------------- compression

# JPEG's luminance quantisation table (ITU-T T.81, Annex K.1)
JPEG_LUMINANCE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)


def dct_matrix(n: int = 8) -> Tensor:
    # D[k, i] = c_k cos(pi (2i + 1) k / 2n), c_0 = sqrt(1/n), c_k = sqrt(2/n): orthonormal DCT-II
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] = math.sqrt(1 / n)
    return d.float()


def jpeg_table(quality: int) -> Tensor:
    """IJG's scaling of the luminance table: s = 5000/q below 50, else 200 - 2q; Q = floor((T s + 50) / 100)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"jpeg quality: expected 1..100, got {quality}")
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    table = torch.floor((torch.tensor(JPEG_LUMINANCE, dtype=torch.float64) * scale + 50) / 100)
    return table.clamp(1, 255).float()


def jpeg_compress(x: Tensor, quality: int) -> Tensor:
    """Greyscale baseline-JPEG round trip of ``x [..., h, w]`` in [0, 1]: 8-bit, blockwise 8x8 DCT, quantised
    with the quality-scaled luminance table, then decoded. Edges are replicated up to a multiple of 8."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % 8, -w % 8
    lead = x.shape[:-2]
    y = x.reshape(-1, 1, h, w)
    if pad_h or pad_w:
        y = torch.nn.functional.pad(y, (0, pad_w, 0, pad_h), mode="replicate")
    y = torch.round(y[:, 0] * 255) - 128
    blocks = rearrange(y, "n (bh i) (bw j) -> n bh bw i j", i=8, j=8)
    d, table = dct_matrix(), jpeg_table(quality)
    coefficients = d @ blocks @ d.T  # C = D B D^T
    blocks = d.T @ (torch.round(coefficients / table) * table) @ d
    y = rearrange(blocks, "n bh bw i j -> n (bh i) (bw j)")
    y = torch.round(y + 128).clamp(0, 255) / 255
    return y[:, :h, :w].reshape(*lead, h, w)
