"""Built-in simulated angiography: FFA/ICGA exams whose classes differ in *time*, not only in space.

An exam is ``frames`` images taken at increasing times after dye injection. Every exam is rendered as

    frame(t) = device( fov * (retina(t) + lesion(t)) )

where ``retina(t)`` mixes the anatomy channels of ``anatomy.py`` with dye curves (choroidal flush, arterial
then venous filling, recirculation, late wash-out; ICGA slower and showing the choroid), ``lesion(t)`` is the
class's time signature and ``device`` applies a camera profile (blur, resolution, vignetting, gain, gamma,
noise). Leakage and staining have the same appearance at the last frame (same radius, brightness and edge
distributions) and differ only in how they got there: leakage grows, staining is bright and fixed from mid
phase on. All random choices come from ``seed``; rendering is batched torch code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from clearmamba.data.cameras import Camera
from clearmamba.data.devices import DEFAULT_DEVICES, DeviceProfile, apply_device
from clearmamba.data.examset import UNKNOWN_LABEL, ExamSet
from clearmamba.data.lesions import MAX_DOTS, UNSEEN_PATTERN, dye_curves, lesion_maps, progress_axis

CLASS_NAMES = ("normal", "leakage", "staining", "pooling", "non_perfusion", "microaneurysms")
CHUNK = 256  # exams rendered per batch; fixed so that the noise stream, hence the output, never depends on it


@dataclass
class SimulatorConfig:
    """What to simulate. Defaults: 8 frames of 1x64x64, six classes, five devices (one held out)."""

    frames: int = 8
    channels: int = 1
    size: int = 64
    classes: tuple[str, ...] = CLASS_NAMES
    icga_fraction: float = 0.35  # share of ICGA exams; the rest are FFA
    devices: tuple[DeviceProfile | Camera, ...] = DEFAULT_DEVICES  # a Camera sees the retina beyond the FOV
    heldout_devices: tuple[str, ...] = ("device_E",)
    label_noise: float = 0.0  # probability that an exam's label is replaced by another class
    imbalance: float = 1.0  # frequency ratio of the most to the least common class (long tail); 1 = balanced
    min_frames: int | None = None  # if set, each exam keeps between min_frames and frames real frames
    max_visits: int = 2  # exams per eye (repeat visits share that eye's vessel tree)
    templates: int = 12  # vessel-tree templates built per seed
    retina_templates: int = 2  # of which traced from the real fundus photo
    lesion_strength: float = 1.0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        unknown = [c for c in self.classes if c not in CLASS_NAMES]
        if unknown:
            raise ValueError(f"SimulatorConfig.classes: unknown {unknown}; expected names from {CLASS_NAMES}")
        if not 1 <= self.frames <= 64:
            raise ValueError(f"SimulatorConfig.frames: expected 1..64, got {self.frames}")
        if not 16 <= self.size <= 224:
            raise ValueError(f"SimulatorConfig.size: expected 16..224, got {self.size}")
        if self.channels not in (1, 3):
            raise ValueError(f"SimulatorConfig.channels: expected 1 or 3, got {self.channels}")
        if self.min_frames is not None and not 1 <= self.min_frames <= self.frames:
            raise ValueError(f"SimulatorConfig.min_frames: expected 1..{self.frames}, got {self.min_frames}")
        if not 0 <= self.label_noise < 1 or self.imbalance < 1 or not 0 <= self.icga_fraction <= 1:
            raise ValueError(
                "SimulatorConfig: expected 0 <= label_noise < 1, imbalance >= 1, icga_fraction in [0, 1]"
            )
        names = {d.name for d in self.devices}
        if not set(self.heldout_devices) <= names:
            raise ValueError(
                f"SimulatorConfig.heldout_devices: {self.heldout_devices} not in {sorted(names)}"
            )

    @property
    def training_devices(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices if d.name not in self.heldout_devices)

    def class_probabilities(self) -> np.ndarray:
        # long tail: p_k proportional to imbalance^(-k/(K-1)), so p_0 / p_{K-1} = imbalance
        k = len(self.classes)
        p = self.imbalance ** (-np.arange(k) / max(k - 1, 1))
        return p / p.sum()


# ----------------------------------------------------------------------------------------------- sampling


def _sample_exam_plan(n: int, cfg: SimulatorConfig, rng: np.random.Generator, devices: tuple[str, ...]):
    """Patients, eyes and visits first (so repeat visits share anatomy), then per-exam choices."""
    from clearmamba.data.anatomy import random_warp_params

    unit_of_exam, patient_of_unit, eye_of_unit = [], [], []
    patient = 0
    while len(unit_of_exam) < n:
        eyes = [("OD", "OS", ("OD", "OS"))[rng.integers(3)]]
        for eye in eyes[0] if isinstance(eyes[0], tuple) else eyes:
            unit = len(patient_of_unit)
            patient_of_unit.append(patient)
            eye_of_unit.append(eye)
            unit_of_exam += [unit] * int(rng.integers(1, cfg.max_visits + 1))
        patient += 1
    unit = np.asarray(unit_of_exam[:n])
    units = len(patient_of_unit)
    retina_p = cfg.retina_templates / cfg.templates
    procedural = cfg.templates - cfg.retina_templates
    template = np.where(
        rng.random(units) < retina_p,
        procedural + rng.integers(0, max(cfg.retina_templates, 1), units),
        rng.integers(0, max(procedural, 1), units),
    )
    warp = random_warp_params(rng, units)
    jitter = random_warp_params(rng, n, strength=0.08)  # re-positioning between visits
    warp = {k: v[unit] for k, v in warp.items()}
    warp["angle"] = warp["angle"] + jitter["angle"]
    warp["shift"] = warp["shift"] + jitter["shift"]
    warp["zoom"] = warp["zoom"] * jitter["zoom"]
    plan = {
        "unit": unit,
        "patient": np.asarray(patient_of_unit)[unit],
        "eye": np.asarray(eye_of_unit)[unit],
        "template": template[unit],
        "warp": warp,
        "icga": rng.random(n) < cfg.icga_fraction,
        "label": rng.choice(len(cfg.classes), size=n, p=cfg.class_probabilities()),
        "device": np.asarray(devices)[rng.integers(0, len(devices), n)],
        "arrival": rng.uniform(9.0, 14.0, n),  # arm-to-retina time, seconds
        "real_frames": (
            rng.integers(cfg.min_frames, cfg.frames + 1, n) if cfg.min_frames else np.full(n, cfg.frames)
        ),
        "lesion_candidates": rng.uniform(-1, 1, (n, 6, 2)) * np.array([0.62, 0.62]),
        "radius": rng.uniform(0.07, 0.14, n),
        "brightness": rng.uniform(0.35, 0.6, n) * cfg.lesion_strength,
        "ellipse": np.stack(
            [rng.uniform(1.1, 1.5, n), rng.uniform(0.6, 0.85, n), rng.uniform(0, np.pi, n)], 1
        ),
        "wobble": np.stack(
            [rng.uniform(0.1, 0.3, n), rng.integers(2, 5, n), rng.uniform(0, 2 * np.pi, n)], 1
        ),
        "dots": rng.uniform(-0.55, 0.55, (n, MAX_DOTS, 2)),
        "dot_count": rng.integers(5, MAX_DOTS + 1, n),
        "scar_angle": rng.uniform(0, 2 * np.pi, (n, MAX_DOTS)),
        "scar_radius": rng.uniform(0.5, 0.85, (n, MAX_DOTS)),
    }
    # frame times: log-spaced from the arterial phase to the late phase (ICGA runs longer), jittered
    last = np.where(plan["icga"], rng.uniform(900, 1800, n), rng.uniform(300, 660, n))
    first = plan["arrival"] + rng.uniform(-0.5, 2.0, n)
    times = np.zeros((n, cfg.frames))
    for i in range(n):
        k = plan["real_frames"][i]
        base = np.geomspace(1.0, last[i] - first[i] + 1.0, k) - 1.0 + first[i]
        times[i, :k] = np.sort(base * np.exp(rng.normal(0, 0.04, k)))
    plan["times"] = times
    return plan


# ----------------------------------------------------------------------------------------------- rendering


def _render_chunk(plan: dict, sl: slice, cfg: SimulatorConfig, kinds: tuple[str, ...], bank, fov, gen):
    from clearmamba.data.anatomy import warp_templates

    size = cfg.size
    b = sl.stop - sl.start
    take = lambda key: torch.as_tensor(np.asarray(plan[key][sl]), dtype=torch.float32)  # noqa: E731
    warp = {k: v[sl] for k, v in plan["warp"].items()}
    anat = warp_templates(bank, plan["template"][sl], warp, plan["eye"][sl] == "OS", size)  # [b, 6, h, w]
    artery, vein, capillary, choroid, disc, macula = anat.unbind(1)
    icga = torch.as_tensor(plan["icga"][sl])
    times, real = take("times"), torch.as_tensor(plan["real_frames"][sl], dtype=torch.int64)
    curves = dye_curves(times, take("arrival"), icga)
    prog = progress_axis(curves["u"], real)

    # lesion centre: the first candidate inside the fundus and away from the optic disc
    cand = take("lesion_candidates")  # [b, 6, 2]
    disc_at = F.grid_sample(disc[:, None], cand[:, None], align_corners=False)[:, 0, 0]  # [b, 6]
    ok = (disc_at < 0.05).float()
    first = torch.argmax(ok, dim=1)
    centre = cand[torch.arange(b), first]
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    dx, dy = xx[None] - centre[:, 0, None, None], yy[None] - centre[:, 1, None, None]
    d, angle = torch.sqrt(dx**2 + dy**2), torch.atan2(dy, dx)
    keys = ("radius", "brightness", "ellipse", "wobble", "dots", "scar_angle", "scar_radius")
    params = {k: take(k) for k in keys}
    params.update(dot_count=take("dot_count"), dx=dx, dy=dy, strength=torch.full((b,), cfg.lesion_strength))

    lesion = torch.zeros((b, cfg.frames, size, size))
    perfusion = torch.ones((b, 1, size, size))
    labels = plan["label"][sl]
    for index, kind in enumerate(kinds):
        rows = np.nonzero(labels == index)[0]
        if len(rows) == 0:
            continue
        r = torch.as_tensor(rows)
        sub = {k: v[r] for k, v in params.items()}
        sub_curves = {k: v[r] for k, v in curves.items()}
        add, mult = lesion_maps(kind, sub, d[r], angle[r], prog[r], sub_curves, xx, yy)
        lesion[r], perfusion[r] = add, mult

    # The background is linear in the dye curves: image = sum_k coef[b, t, k] * basis[b, k, h, w]
    a, v, c, late = (curves[k] for k in ("artery", "vein", "choroid", "late"))
    perf = perfusion[:, 0]
    pigment = 1 - 0.35 * macula  # macular pigment blocks the FFA background glow
    basis = torch.stack(
        [
            perf * (0.12 + 0.18 * choroid) * pigment,  # FFA choroidal flush seen through the RPE
            perf * capillary * pigment,
            perf * artery,
            perf * vein,
            disc,
            perf * pigment,
            perf * choroid,  # ICGA: the choroidal vessels themselves
            1 - 0.6 * (artery + vein).clamp(max=1),  # ICGA late: vessels dark against the diffuse glow
        ],
        dim=1,
    )
    zero = torch.zeros_like(a)
    ffa = torch.stack(
        [c, 0.35 * (0.6 * a + 0.4 * v), 0.6 * a, 0.6 * v, 0.35 * a + 0.3 * late, 0.06 * late, zero, zero],
        dim=-1,
    )
    icg = torch.stack([zero, 0.12 * c, 0.55 * a, 0.55 * v, 0.15 * a, zero, 0.55 * c, 0.18 * late], dim=-1)
    coef = torch.where(icga[:, None, None], icg, ffa)  # [b, t, k]
    ideal = torch.einsum("btk,bkhw->bthw", coef, basis) + lesion
    image = ideal * fov

    out = torch.zeros_like(image)
    devices = plan["device"][sl]
    by_name = {dev.name: dev for dev in cfg.devices}
    for name in dict.fromkeys(devices.tolist()):
        r = torch.as_tensor(np.nonzero(devices == name)[0])
        device = by_name[name]
        if isinstance(device, Camera):  # its own aperture, so it gets the retina before the simulator's FOV
            seen = device.apply(ideal[r].reshape(-1, size, size), gen)
        else:
            seen = apply_device(image[r].reshape(-1, size, size), device, fov, gen)
        out[r] = seen.reshape(len(r), cfg.frames, size, size)
    mask = torch.arange(cfg.frames)[None] < real[:, None]
    out = out * mask[:, :, None, None]
    return out[:, :, None].expand(-1, -1, cfg.channels, -1, -1).contiguous(), times * mask, mask


def _simulate(
    n, cfg, seed, devices, progress, kinds, unknown_label, id_prefix, name, anatomy_seed
) -> ExamSet:
    from clearmamba.data.anatomy import field_of_view, template_bank

    if n < 1:
        raise ValueError(f"simulate_exams: expected n >= 1, got {n}")
    known = {d.name for d in cfg.devices}
    devices = tuple(devices) if devices is not None else cfg.training_devices
    if not devices or not set(devices) <= known:
        raise ValueError(f"simulate_exams: devices {devices} must be a non-empty subset of {sorted(known)}")
    rng = np.random.default_rng([seed, 1])
    plan = _sample_exam_plan(n, cfg, rng, devices)
    if unknown_label:
        plan["label"] = np.zeros(n, dtype=np.int64)
    anatomy_seed = seed if anatomy_seed is None else anatomy_seed
    bank = template_bank(cfg.size, int(anatomy_seed), cfg.templates, cfg.retina_templates)
    fov = field_of_view(cfg.size)
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + 17)
    frames = torch.zeros((n, cfg.frames, cfg.channels, cfg.size, cfg.size))
    times = torch.zeros((n, cfg.frames))
    mask = torch.zeros((n, cfg.frames), dtype=torch.bool)
    starts = range(0, n, CHUNK)
    if progress:
        from rich.progress import track

        starts = track(starts, description=f"simulating {n} exams")
    for start in starts:
        sl = slice(start, min(start + CHUNK, n))
        frames[sl], times[sl], mask[sl] = _render_chunk(plan, sl, cfg, kinds, bank, fov, gen)

    true = torch.as_tensor(plan["label"], dtype=torch.int64)
    labels = true.clone()
    if unknown_label:
        labels[:] = UNKNOWN_LABEL
        true = labels.clone()
    elif cfg.label_noise > 0:
        flip = rng.random(n) < cfg.label_noise
        shift = rng.integers(1, len(cfg.classes), n)  # to a different class, uniformly
        noisy = (plan["label"] + shift) % len(cfg.classes)
        labels = torch.as_tensor(np.where(flip, noisy, plan["label"]), dtype=torch.int64)
    prefix = id_prefix if id_prefix is not None else f"s{seed}"
    return ExamSet(
        frames=frames,
        labels=labels,
        frame_times=times,
        mask=mask,
        exam_id=[f"{prefix}-e{i:05d}" for i in range(n)],
        patient_id=[f"{prefix}-p{p:05d}" for p in plan["patient"]],
        eye=plan["eye"].tolist(),
        modality=np.where(plan["icga"], "ICGA", "FFA").tolist(),
        device_id=plan["device"].tolist(),
        class_names=cfg.classes,
        true_labels=true,
        name=name,
        info={"source": "simulator", "seed": seed, "lesion_kinds": kinds},
    )


def simulate_exams(
    n: int,
    config: SimulatorConfig | None = None,
    seed: int = 0,
    devices: tuple[str, ...] | list[str] | None = None,
    progress: bool = False,
    id_prefix: str | None = None,
    name: str = "simulated",
    anatomy_seed: int | None = None,
) -> ExamSet:
    """Simulate ``n`` angiography exams; the same arguments give the same bytes.

    ``devices`` restricts the cameras (default: all but ``config.heldout_devices``). Exam and patient ids
    start with ``id_prefix`` (default ``s<seed>``), so sets made with different prefixes share no patient.
    ``anatomy_seed`` (default ``seed``) picks the bank of vessel-tree templates, built once and cached.
    """
    cfg = config or SimulatorConfig()
    return _simulate(n, cfg, seed, devices, progress, cfg.classes, False, id_prefix, name, anatomy_seed)


def simulate_unseen_disease(
    n: int,
    config: SimulatorConfig | None = None,
    seed: int = 0,
    devices=None,
    id_prefix: str | None = None,
    anatomy_seed: int | None = None,
) -> ExamSet:
    """Exams showing a disease pattern outside ``CLASS_NAMES`` (laser scars); labels are ``UNKNOWN_LABEL``."""
    cfg = config or SimulatorConfig()
    return _simulate(
        n,
        cfg,
        seed,
        devices,
        False,
        (UNSEEN_PATTERN,),
        True,
        id_prefix or f"u{seed}",
        "ood_unseen_disease",
        anatomy_seed,
    )


def with_classes(config: SimulatorConfig, classes: tuple[str, ...]) -> SimulatorConfig:
    """A copy of ``config`` simulating only ``classes``."""
    return replace(config, classes=tuple(classes))

