"""Fundus camera profiles: how a device degrades the ideal angiogram (blur, sensor resolution, vignetting,
gain, gamma, signal-dependent noise). Blur and resolution are one matrix T per device: ``T @ x @ T.T``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DeviceProfile:
    """A fundus camera: how it degrades the ideal image."""

    name: str
    gain: float = 1.0
    gamma: float = 1.0
    noise: float = 0.02  # std of signal-dependent Gaussian noise
    blur: float = 0.0  # Gaussian blur sigma, in pixels at 64x64
    vignetting: float = 0.15  # fractional darkening at the FOV edge
    resolution: float = 1.0  # sensor resolution relative to the output size


DEFAULT_DEVICES = (
    DeviceProfile("device_A", gain=1.0, gamma=1.0, noise=0.02, blur=0.0, vignetting=0.15, resolution=1.0),
    DeviceProfile("device_B", gain=0.9, gamma=1.2, noise=0.03, blur=0.6, vignetting=0.3, resolution=1.0),
    DeviceProfile("device_C", gain=1.1, gamma=0.85, noise=0.015, blur=0.3, vignetting=0.1, resolution=0.75),
    DeviceProfile("device_D", gain=0.85, gamma=1.1, noise=0.035, blur=0.8, vignetting=0.25, resolution=1.0),
    # held out of training by default: a low-resolution, noisy, high-gain wide-field camera
    DeviceProfile("device_E", gain=1.3, gamma=0.7, noise=0.06, blur=1.2, vignetting=0.45, resolution=0.5),
)


def optics_matrix(dev: DeviceProfile, size: int) -> torch.Tensor:
    """``[size, size]`` matrix T such that ``T @ x @ T.T`` blurs (Gaussian, edge-renormalised) and resamples
    ``x`` through the device's lower sensor resolution (area down, linear up). Two matmuls per frame."""
    return blur_resolution_matrix(dev.blur, dev.resolution, size)


def blur_resolution_matrix(blur: float, resolution: float, size: int) -> torch.Tensor:
    """``[size, size]`` matrix: Gaussian blur of sigma ``blur`` (pixels at 64 px, edge-renormalised), then area
    down to ``resolution * size`` pixels (at least 8) and linear back up. Shared by devices and cameras."""
    index = torch.arange(size, dtype=torch.float32)
    sigma = blur * size / 64
    if sigma > 0:
        kernel = torch.exp(-((index[:, None] - index[None, :]) ** 2) / (2 * sigma**2))
        kernel = kernel / kernel.sum(1, keepdim=True)
    else:
        kernel = torch.eye(size)
    low = max(int(round(size * resolution)), 8)
    if low >= size:
        return kernel
    down = F.interpolate(torch.eye(size)[None], size=low, mode="area")[0].T  # [low, size]
    up = F.interpolate(torch.eye(low)[None], size=size, mode="linear", align_corners=False)[
        0
    ].T  # [size, low]
    return up @ down @ kernel


def apply_device(
    x: torch.Tensor, dev: DeviceProfile, fov: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """Camera degradation of ``x [m, h, w]``: blur, resolution, vignetting, gain, gamma, noise."""
    size = x.shape[-1]
    optics = optics_matrix(dev, size)
    x = optics @ x @ optics.T
    axis = (torch.arange(size) + 0.5) / size * 2 - 1
    r2 = axis[None, :] ** 2 + axis[:, None] ** 2
    x = x * ((1 - dev.vignetting * r2.clamp(max=1)) * dev.gain)
    x = x.clamp_(0, 1)
    if dev.gamma != 1.0:
        x = x.pow_(dev.gamma)
    noise = torch.randn(x.shape, generator=gen)
    x = x.addcmul_(noise, torch.sqrt(x + 0.05), value=dev.noise)
    return (x * fov).clamp_(0, 1)
