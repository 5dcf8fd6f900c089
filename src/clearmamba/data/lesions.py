"""Dye curves and lesion time signatures of the angiography simulator (batched torch).

Shapes: ``b`` exams, ``t`` frames, ``h w`` pixels; coordinates normalised to [-1, 1].
"""

from __future__ import annotations

import torch

UNSEEN_PATTERN = "laser_scars"  # a disease no model was trained on: rings of laser photocoagulation scars
MAX_DOTS = 12


def _sig(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def dye_curves(times: torch.Tensor, arrival: torch.Tensor, icga: torch.Tensor) -> dict[str, torch.Tensor]:
    """Dye curves ``[b, t]`` in (0, 1). u = (t - arrival) / speed; ICGA is slower (speed 1.8)."""
    speed = torch.where(icga, 1.8, 1.0)[:, None]
    u = (times - arrival[:, None]) / speed
    t_eff = times / speed
    washout = torch.exp(-t_eff / 700.0)  # dye leaves the vessels in the late phase
    artery = _sig((u - 1.0) / 0.8) * (0.45 + 0.55 * torch.exp(-(u - 1.0).clamp(min=0) / 12)) * washout
    vein = _sig((u - 6.0) / 1.8) * (0.45 + 0.55 * torch.exp(-(u - 6.0).clamp(min=0) / 25)) * washout
    choroid = _sig((u + 0.5) / 0.6) * (0.3 + 0.7 * torch.exp(-u.clamp(min=0) / 8))
    late = _sig((t_eff - 180.0) / 90.0)  # late phase: diffuse tissue staining, disc staining
    return {"u": u, "artery": artery, "vein": vein, "choroid": choroid, "late": late}


def progress_axis(u: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Per-frame progress ``[b, t]`` in [0, 1] on a log-time axis: 0 at 2 s after arrival, 1 at the last real
    frame. Lesion sizes and brightness are functions of it, so the last frame looks alike across exams."""
    u0 = 2.0
    last = u.gather(1, (real - 1)[:, None]).clamp(min=u0 + 1)
    return (torch.log(u.clamp(min=u0) / u0) / torch.log(last / u0)).clamp(0, 1)


def lesion_maps(kind: str, p: dict, d: torch.Tensor, angle: torch.Tensor, prog: torch.Tensor, curves, xx, yy):
    """Additive lesion map ``[b, t, h, w]`` and multiplicative perfusion map ``[b, 1, h, w]`` of a kind."""
    b, t = prog.shape
    R = p["radius"][:, None, None, None]
    bright = p["brightness"][:, None, None, None]
    pg = prog[:, :, None, None]
    ones = torch.ones_like(d[:, None])
    if kind == "leakage":  # grows in size and brightness through the late frames, fuzzy margin
        radius, level = R * (0.25 + 0.75 * pg), bright * (0.1 + 0.9 * pg)
        return level * _sig((radius - d[:, None]) / (0.25 * R)), ones
    if kind == "staining":  # bright from mid frames on, constant size: same final appearance as leakage
        level = bright * ((pg - 0.15) / 0.3).clamp(0, 1)
        return level * _sig((R - d[:, None]) / (0.25 * R)), ones
    if kind == "pooling":  # fills a sharply bounded (elliptic) space gradually, stays bright
        a, c, rot = p["ellipse"][:, 0], p["ellipse"][:, 1], p["ellipse"][:, 2]
        dx, dy = p["dx"], p["dy"]
        cr, sr = torch.cos(rot)[:, None, None], torch.sin(rot)[:, None, None]
        along, across = (dx * cr + dy * sr) / a[:, None, None], (-dx * sr + dy * cr) / c[:, None, None]
        e = torch.sqrt(along**2 + across**2)
        level = bright * (0.1 + 0.9 * (pg / 0.8).clamp(0, 1))
        return level * _sig((R - e[:, None]) / 0.012), ones
    if kind == "non_perfusion":  # dark capillary-free zone with an irregular border, constant in time
        amp, lobes, phase = p["wobble"][:, 0], p["wobble"][:, 1], p["wobble"][:, 2]
        wobble = amp[:, None, None] * torch.sin(lobes[:, None, None] * angle + phase[:, None, None])
        border = 2.2 * R[:, 0] * (1 + wobble)
        zone = _sig((border - d) / 0.02)
        return torch.zeros((b, t, *d.shape[1:])), (1 - 0.9 * p["strength"][:, None, None] * zone)[:, None]
    if kind == "microaneurysms":  # pinpoint dots lighting up with the arterial phase, slowly fading
        # a Gaussian dot is separable: exp(-(x-xk)^2/2s^2) exp(-(y-yk)^2/2s^2), so all dots are one bmm
        on = (torch.arange(MAX_DOTS)[None] < p["dot_count"][:, None]).float()  # [b, k]
        axis = xx[0]
        gx = torch.exp(-((axis[None, None] - p["dots"][:, :, 0, None]) ** 2) / (2 * 0.024**2))  # [b, k, w]
        gy = torch.exp(-((axis[None, None] - p["dots"][:, :, 1, None]) ** 2) / (2 * 0.024**2))  # [b, k, h]
        dots = torch.einsum("bkh,bkw->bhw", gy * on[:, :, None], gx)
        u = curves["u"][:, :, None, None]
        level = 2.2 * bright * _sig((u - 1.5) / 0.8) * (0.7 + 0.3 * torch.exp(-u.clamp(min=0) / 300))
        return level * dots[:, None], ones
    if kind == UNSEEN_PATTERN:  # rings with hyperfluorescent rims (window defects) and dark pigmented centres
        rim, centre = torch.zeros_like(d), torch.zeros_like(d)
        for k in range(MAX_DOTS):
            on = (p["dot_count"] > k).float()[:, None, None]
            cx = p["scar_radius"][:, k] * torch.cos(p["scar_angle"][:, k])
            cy = p["scar_radius"][:, k] * torch.sin(p["scar_angle"][:, k])
            dk = torch.sqrt((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2)
            rim = rim + on * torch.exp(-(((dk - 0.05) / 0.018) ** 2))
            centre = torch.maximum(centre, on * _sig((0.035 - dk) / 0.01))
        level = bright * (0.5 + 0.8 * curves["choroid"][:, :, None, None])
        return level * rim[:, None], (1 - 0.8 * p["strength"][:, None, None] * centre)[:, None]
    return torch.zeros((b, t, *d.shape[1:])), ones
