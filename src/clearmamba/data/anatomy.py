"""Fundus anatomy for the angiography simulator: a bank of vessel-tree templates, built once per seed.

Coordinates are normalised to [-1, 1] (x to the right, y down, as ``torch.nn.functional.grid_sample`` uses);
every template is a right eye (OD: optic disc on the right of the image). Left eyes are mirror images.
Channels of a template (``ANATOMY_CHANNELS``):
  artery, vein   retinal vessels, filled at different times
  capillary      the fine capillary bed (a smooth texture, absent in the foveal avascular zone)
  choroid        the choroidal vessel network (faint in FFA, visible in ICGA)
  disc, macula   soft masks of the optic disc and the macula
Two kinds of tree: procedural (branching random walks that arch around the macula) and one traced from the
real CC0 colour fundus photo shipped with scikit-image (``skimage.data.retina()``) by a vesselness filter.
Per-exam variety comes from cheap batched warps (``warp_templates``), not from rebuilding trees.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

ANATOMY_CHANNELS = ("artery", "vein", "capillary", "choroid", "disc", "macula")
DISC_XY = (0.42, 0.0)  # optic disc centre of a procedural OD template
MACULA_XY = (-0.12, 0.04)  # fovea, about 2.5 disc diameters temporal to the disc
FAZ_RADIUS = 0.1  # foveal avascular zone


def _grid(res: int) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(res) + 0.5) / res * 2 - 1
    return np.meshgrid(axis, axis, indexing="xy")


def _smooth_noise(rng: np.random.Generator, res: int, sigma_px: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal((res, res)), sigma_px, mode="wrap")
    return field / (field.std() + 1e-8)


def _choroid_network(rng: np.random.Generator, res: int) -> np.ndarray:
    # zero-crossings of band-passed noise form a connected, tortuous network like choroidal vessels
    band = _smooth_noise(rng, res, res / 40) - 0.6 * _smooth_noise(rng, res, res / 20)
    band /= band.std() + 1e-8
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(np.exp(-((band / 0.3) ** 2)), res / 80).astype(np.float32)


def _capillary_bed(rng: np.random.Generator, res: int, macula_xy: tuple[float, float]) -> np.ndarray:
    x, y = _grid(res)
    texture = 0.8 + 0.2 * np.tanh(_smooth_noise(rng, res, res / 60))
    faz = np.hypot(x - macula_xy[0], y - macula_xy[1])
    # capillaries thin out towards the foveal avascular zone
    return (texture * np.clip((faz - FAZ_RADIUS) / 0.12, 0, 1)).astype(np.float32)


def _soft_masks(res: int, disc_xy, macula_xy) -> tuple[np.ndarray, np.ndarray]:
    x, y = _grid(res)
    disc_r = np.hypot(x - disc_xy[0], y - disc_xy[1])
    disc = 1 / (1 + np.exp((disc_r - 0.085) / 0.012))
    macula = np.exp(-(np.hypot(x - macula_xy[0], y - macula_xy[1]) ** 2) / (2 * 0.13**2))
    return disc.astype(np.float32), macula.astype(np.float32)


def _grow_vessel(rng, segments, x, y, heading, target, width, depth, macula_xy) -> None:
    """Branching random walk: heading relaxes toward ``target``; side branches spawn with thinner widths
    and wander (their own target drifts) so that small vessels curve instead of running straight."""
    step = 0.022
    for _ in range(120):
        heading += 0.08 * np.angle(np.exp(1j * (target - heading))) + rng.normal(0, 0.12)
        if depth > 0:
            target += rng.normal(0, 0.15)
        nx, ny = x + step * np.cos(heading), y + step * np.sin(heading)
        segments.append((x, y, nx, ny, width))
        x, y = nx, ny
        if np.hypot(x, y) > 1.0 or np.hypot(x - macula_xy[0], y - macula_xy[1]) < FAZ_RADIUS:
            return
        if depth < 3 and width > 0.009 and rng.random() < 0.05:
            side = rng.choice([-1.0, 1.0])
            child = heading + side * rng.uniform(0.5, 0.95)
            thinner = width * rng.uniform(0.55, 0.75)
            _grow_vessel(rng, segments, x, y, child, child, thinner, depth + 1, macula_xy)
            width *= 0.93
        width *= 0.995
        if width < 0.005:
            return


def _render(segments: list[tuple[float, float, float, float, float]], res: int) -> np.ndarray:
    """Rasterise vessel segments as discs placed every half pixel (vectorised splat); thin vessels are
    dimmer (partial volume: a vessel narrower than a pixel fills only part of it)."""
    from scipy.ndimage import gaussian_filter

    seg = np.asarray(segments, dtype=np.float64).reshape(-1, 5)
    scale = res / 2
    steps = np.maximum((np.hypot(seg[:, 2] - seg[:, 0], seg[:, 3] - seg[:, 1]) * scale * 2).astype(int), 1)
    owner = np.repeat(np.arange(len(seg)), steps + 1)
    frac = np.concatenate([np.linspace(0, 1, k + 1) for k in steps])
    s = seg[owner]
    cx = (s[:, 0] + frac * (s[:, 2] - s[:, 0]) + 1) * scale  # column, pixels
    cy = (s[:, 1] + frac * (s[:, 3] - s[:, 1]) + 1) * scale  # row, pixels
    radius = np.maximum(s[:, 4] * scale, 0.7)
    level = np.minimum(1.0, 0.2 + s[:, 4] / 0.03)
    canvas = np.zeros((res, res), dtype=np.float64)
    reach = int(np.ceil(radius.max()))
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            row, col = np.round(cy).astype(int) + dy, np.round(cx).astype(int) + dx
            inside = (np.hypot(row + 0.5 - cy, col + 0.5 - cx) <= radius) & (row >= 0) & (row < res)
            inside &= (col >= 0) & (col < res)
            np.maximum.at(canvas, (row[inside], col[inside]), level[inside])
    return gaussian_filter(canvas, 0.5).astype(np.float32)


def procedural_template(rng: np.random.Generator, res: int) -> np.ndarray:
    """One OD template ``[6, res, res]`` from branching random walks: four arcades of artery/vein pairs."""
    disc_xy = (DISC_XY[0] + rng.normal(0, 0.03), DISC_XY[1] + rng.normal(0, 0.03))
    macula_xy = (MACULA_XY[0] + rng.normal(0, 0.03), MACULA_XY[1] + rng.normal(0, 0.03))
    # (start heading, target heading): temporal arcades arch around the macula, nasal ones run to the edge
    arcades = [(-1.9, np.pi), (1.9, np.pi), (-0.9, -0.3), (0.9, 0.3)]
    maps = {}
    for kind, offset, width in (("artery", -0.12, 0.017), ("vein", 0.12, 0.023)):
        segments: list[tuple[float, float, float, float, float]] = []
        for start, target in arcades:
            h = start + offset + rng.normal(0, 0.1)
            _grow_vessel(rng, segments, disc_xy[0], disc_xy[1], h, target, width, 0, macula_xy)
        maps[kind] = _render(segments, res)
    disc, macula = _soft_masks(res, disc_xy, macula_xy)
    return np.stack(
        [
            maps["artery"],
            maps["vein"],
            _capillary_bed(rng, res, macula_xy),
            _choroid_network(rng, res),
            disc,
            macula,
        ]
    )


@lru_cache(maxsize=4)
def _retina_vessels(res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple, tuple]:
    """Vessel maps traced from ``skimage.data.retina()`` (CC0), mirrored to OD and cropped to its FOV."""
    from scipy.ndimage import binary_erosion, gaussian_filter
    from skimage import data, filters, transform

    photo = data.retina().astype(np.float32) / 255.0
    brightness = photo.mean(-1)
    rows, cols = np.nonzero(brightness > 0.06)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    side = max(bottom - top, right - left)
    cy, cx = (top + bottom) // 2, (left + right) // 2
    crop = photo[max(cy - side // 2, 0) : cy + side // 2, max(cx - side // 2, 0) : cx + side // 2]
    work = 256
    green = transform.resize(crop[..., 1], (work, work), anti_aliasing=True)
    fov = binary_erosion(transform.resize(crop.mean(-1), (work, work)) > 0.06, iterations=6)
    vesselness = filters.sato(green, sigmas=[1, 2, 3], black_ridges=True) * fov
    vessels = np.clip(vesselness / np.percentile(vesselness[fov], 99.0), 0, 1)
    vessels = np.where(vessels > 0.25, vessels, 0.0)
    smooth = gaussian_filter(green, 4)
    disc_rc = np.unravel_index(np.argmax(np.where(fov, gaussian_filter(green, 8), 0)), smooth.shape)
    if disc_rc[1] < work / 2:  # the photo is a left eye: mirror it into the OD convention
        vessels, green, disc_rc = vessels[:, ::-1], green[:, ::-1], (disc_rc[0], work - 1 - disc_rc[1])
    # veins are darker than arteries in a colour photo: split vessel pixels at the median local darkness
    local = gaussian_filter(green * (vessels > 0), 1.5) / (gaussian_filter((vessels > 0) * 1.0, 1.5) + 1e-6)
    threshold = np.median(local[vessels > 0])
    vein = np.where(local < threshold, vessels, 0.0)
    artery = vessels - vein
    artery, vein = (
        transform.resize(m, (res, res), anti_aliasing=True).astype(np.float32) for m in (artery, vein)
    )
    to_xy = lambda rc: (rc[1] / work * 2 - 1, rc[0] / work * 2 - 1)  # noqa: E731
    disc_xy = to_xy(disc_rc)
    macula_xy = (disc_xy[0] - 0.52, disc_xy[1] + 0.03)
    return artery, vein, np.float32(1.0), disc_xy, macula_xy


def retina_template(rng: np.random.Generator, res: int) -> np.ndarray:
    """One OD template ``[6, res, res]`` whose retinal vessels come from the real fundus photo."""
    artery, vein, _, disc_xy, macula_xy = _retina_vessels(res)
    disc, macula = _soft_masks(res, disc_xy, macula_xy)
    return np.stack(
        [
            np.clip(artery / max(np.percentile(artery, 99.8), 1e-6), 0, 1) ** 1.2,  # faint vessels dimmer
            np.clip(vein / max(np.percentile(vein, 99.8), 1e-6), 0, 1) ** 1.2,
            _capillary_bed(rng, res, macula_xy),
            _choroid_network(rng, res),
            disc,
            macula,
        ]
    ).astype(np.float32)


@lru_cache(maxsize=8)
def template_bank(size: int, seed: int, count: int = 12, retina_count: int = 2) -> torch.Tensor:
    """``[count, 6, 2*size, 2*size]`` templates (rendered at twice the output size, then warped down)."""
    rng = np.random.default_rng([seed, 7919])
    res = min(2 * size, 512)
    bank = [procedural_template(rng, res) for _ in range(count - retina_count)]
    bank += [retina_template(rng, res) for _ in range(retina_count)]
    return torch.from_numpy(np.stack(bank)).float()


def random_warp_params(rng: np.random.Generator, n: int, strength: float = 1.0) -> dict[str, np.ndarray]:
    """Per-anatomy affine + elastic warp: rotation, zoom (a crop), shift, coarse displacement field."""
    return {
        "angle": rng.uniform(-0.3, 0.3, n) * strength,
        "zoom": np.exp(rng.uniform(-0.12, 0.25, n) * strength),
        "shift": rng.uniform(-0.1, 0.1, (n, 2)) * strength,
        "elastic": rng.normal(0, 0.035, (n, 2, 4, 4)) * strength,
    }


def warp_templates(
    bank: torch.Tensor, which: np.ndarray, params: dict[str, np.ndarray], mirror: np.ndarray, size: int
) -> torch.Tensor:
    """Warp templates ``bank[which]`` to ``[n, 6, size, size]``: rotate, zoom, shift, elastic, mirror (OS)."""
    n = len(which)
    angle = torch.as_tensor(params["angle"], dtype=torch.float32)
    zoom = torch.as_tensor(params["zoom"], dtype=torch.float32)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, :, 2] = torch.as_tensor(params["shift"], dtype=torch.float32)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)  # [n, h, w, 2]
    elastic = F.interpolate(
        torch.as_tensor(params["elastic"], dtype=torch.float32),
        size=(size, size),
        mode="bicubic",
        align_corners=False,
    )
    grid = grid + elastic.permute(0, 2, 3, 1)
    sign = torch.where(torch.as_tensor(mirror), -1.0, 1.0)
    grid[..., 0] = grid[..., 0] * sign[:, None, None]  # sampling x -> -x mirrors the output (left eye)
    source = bank[torch.as_tensor(which, dtype=torch.int64)]
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def field_of_view(size: int, radius: float = 0.94) -> torch.Tensor:
    """``[size, size]`` soft circular field-of-view mask of the fundus camera."""
    x, y = _grid(size)
    r = np.hypot(x, y)
    return torch.from_numpy(np.clip((radius - r) * size / 2 + 0.5, 0, 1).astype(np.float32))
