"""Fused CPU selective scan: a C++/OpenMP kernel built once, cached, and called through autograd.

The kernel (``csrc/selective_scan_cpu.cpp``) keeps the state ``x[n]`` of a block of channels in SIMD
lanes, reads ``u, delta, B, C`` once, and runs the backward as a reverse-time scan whose states are
recomputed per chunk from checkpoints (memory ``L / chunk`` states instead of ``L``).

It is built with ``torch.utils.cpp_extension.load`` on first use (about 20-40 s, needs a C++ compiler
and ninja) into ``$TORCH_EXTENSIONS_DIR`` or ``~/.cache/clearmamba/ext``; later processes reuse the
build. ``CLEARMAMBA_DISABLE_FUSED=1`` turns it off; when it is off or cannot be built,
:func:`is_available` is False and callers fall back to the eager scan after a one-line notice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange

from . import selective_scan as _dispatch
from .scan_eager import needs_grad
from .selective_scan import register_scan_impl

__all__ = [
    "DISABLE_ENV",
    "fused_available",
    "fused_selective_scan",
    "is_available",
    "load_extension",
    "unavailable_reason",
]

DISABLE_ENV = "CLEARMAMBA_DISABLE_FUSED"
MAX_STATE = 64  # the kernel keeps x[n] for n < MAX_STATE in fixed local arrays
_SOURCE = Path(__file__).with_name("csrc") / "selective_scan_cpu.cpp"
_log = logging.getLogger(__name__)

_extension: Any | None = None
_failure: str | None = None
_notified = False

# SIMD flags per ATen CPU capability: the build is named after the level, so a cached build is only
# reused on a CPU that torch itself runs at that level (no -march=native).
_ISA_FLAGS = {
    "avx512": ["-mavx2", "-mfma", "-mavx512f", "-mavx512dq", "-mavx512bw", "-mavx512vl"],
    "avx2": ["-mavx2", "-mfma"],
}


def _cache_dir() -> Path:
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(root) if root else Path.home() / ".cache" / "clearmamba" / "ext"


def _isa_level() -> str:
    try:
        level = torch.backends.cpu.get_cpu_capability().lower()
    except Exception:  # older torch: be conservative
        return "default"
    return level if level in _ISA_FLAGS else "default"


def _source_tag() -> str:
    # the kernel source and torch version name the build, so checkouts of different versions never
    # overwrite (or wrongly reuse) each other's cached library
    digest = hashlib.sha256(_SOURCE.read_bytes() if _SOURCE.is_file() else b"")
    digest.update(torch.__version__.encode())
    return digest.hexdigest()[:10]


def build_directory() -> Path:
    """Where the kernel is built and cached for this machine's SIMD level and this kernel source."""
    return _cache_dir() / f"clearmamba_scan_{_isa_level()}_{_source_tag()}"


def _disabled_by_env() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _build() -> Any:
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise RuntimeError(f"no C++ compiler ({compiler!r} not on PATH)")
    if not cpp_extension.is_ninja_available():
        raise RuntimeError("ninja is not installed (pip install ninja)")
    if not _SOURCE.is_file():
        raise RuntimeError(f"kernel source missing: {_SOURCE}")
    level = _isa_level()
    build_dir = build_directory()
    build_dir.mkdir(parents=True, exist_ok=True)
    # -O3 without -ffast-math: the vectorised exp relies on exact rounding, and parity must hold.
    cflags = ["-O3", "-fopenmp", *_ISA_FLAGS.get(level, [])]
    # is_python_module=False: the library registers torch.ops.clearmamba_scan.* (no pybind11 headers,
    # which would double the build time) and is loaded with torch.ops.load_library.
    cpp_extension.load(
        name=f"clearmamba_scan_{level}",
        sources=[str(_SOURCE)],
        extra_cflags=cflags,
        extra_ldflags=["-fopenmp"],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )
    return torch.ops.clearmamba_scan


def load_extension() -> Any | None:
    """The compiled kernel module, building it on first call; None when disabled or unbuildable."""
    global _extension, _failure
    if _disabled_by_env():
        return None
    if _extension is None and _failure is None:
        try:
            _extension = _build()
        except Exception as error:  # no compiler, no ninja, compile error: fall back, say why once
            _failure = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error) else ''}"
    return _extension


def is_available() -> bool:
    return load_extension() is not None


def unavailable_reason() -> str | None:
    """Why the fused kernel is not used (None when it is)."""
    if _disabled_by_env():
        return f"disabled by {DISABLE_ENV}=1"
    load_extension()
    return _failure


def notify_fallback(fallback: str = "eager") -> None:
    """One-line notice, once per process, that the fused scan is not used."""
    global _notified
    if not _notified:
        _notified = True
        warnings.warn(
            f"clearmamba: fused CPU selective scan unavailable ({unavailable_reason()}); "
            f"using the {fallback} scan",
            RuntimeWarning,
            stacklevel=3,
        )


def _step(delta, delta_bias, delta_softplus: bool):
    """(pre, Δ): pre = delta + bias, Δ = softplus(pre) or pre."""
    pre = delta if delta_bias is None else delta + delta_bias[:, None]
    return pre, (F.softplus(pre) if delta_softplus else pre)


class _FusedScan(torch.autograd.Function):
    """out = scan(u, softplus?(delta + bias), A, B, C) + D u, gated by silu(z); see the .cpp header.

    Returns ``(out, ckpt)``; ``ckpt`` (chunk checkpoints for the backward) is empty unless
    ``needs_grad``. The ``setup_context`` form plus :meth:`vmap` let ``torch.func.vmap`` run it over
    stacked ensemble members by folding the member axis into the channels.
    """

    @staticmethod
    def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, needs_grad: bool):
        ext = load_extension()
        _, dt = _step(delta, delta_bias, delta_softplus)
        out, ckpt = ext.forward(u, dt.contiguous(), A, B, C, D, z, needs_grad)
        return out, (ckpt if needs_grad else out.new_empty(0))

    @staticmethod
    def setup_context(ctx, inputs, output):
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, needs_grad = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.delta_softplus = delta_softplus
        ctx.has_bias = delta_bias is not None
        if needs_grad:
            ctx.save_for_backward(u, delta, delta_bias, A, B, C, D, z, output[1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out, _g_ckpt):
        u, delta, delta_bias, A, B, C, D, z, ckpt = ctx.saved_tensors
        pre, dt = _step(delta, delta_bias, ctx.delta_softplus)  # recomputed: cheap [b, d, l] passes
        ext = load_extension()
        gu, gdt, gA, gB, gC, gD, gz = ext.backward(u, dt.contiguous(), A, B, C, D, z, ckpt, grad_out.contiguous())
        b, g, n, length = B.shape
        # (b, blocks, l, n) partial sums -> (b, g, n, l)
        gB = gB.view(b, g, -1, length, n).sum(2).transpose(-1, -2)
        gC = gC.view(b, g, -1, length, n).sum(2).transpose(-1, -2)
        gdelta = gdt * torch.sigmoid(pre) if ctx.delta_softplus else gdt  # d softplus(x)/dx = sigmoid(x)
        gbias = gdelta.sum((0, 2)) if ctx.has_bias else None
        return (
            gu,
            gdelta,
            gA.sum(0),
            gB,
            gC,
            gD.sum(0) if D is not None else None,
            gz if z is not None else None,
            gbias,
            None,
            None,
        )

    @staticmethod
    def vmap(info, in_dims, u, delta, A, B, C, D, z, delta_bias, delta_softplus, needs_grad):
        from .scan_eager import fold_members

        m = info.batch_size
        per_channel = "m b d l -> b (m d) l"
        out, ckpt = _FusedScan.apply(
            fold_members(u, in_dims[0], m, per_channel),
            fold_members(delta, in_dims[1], m, per_channel),
            fold_members(A, in_dims[2], m, "m d n -> (m d) n"),
            fold_members(B, in_dims[3], m, "m b g n l -> b (m g) n l"),
            fold_members(C, in_dims[4], m, "m b g n l -> b (m g) n l"),
            fold_members(D, in_dims[5], m, "m d -> (m d)"),
            fold_members(z, in_dims[6], m, per_channel),
            fold_members(delta_bias, in_dims[7], m, "m d -> (m d)"),
            delta_softplus,
            needs_grad,
        )
        # the checkpoints are internal to the folded call (its backward uses them): shared, not batched
        return (rearrange(out, "b (m d) l -> m b d l", m=m), ckpt), (0, None)


def fused_selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Fused CPU scan with mamba_ssm ``selective_scan_ref`` semantics.

    u, delta, z: ``(b d l)``; A: ``(d n)``; B, C: ``(b n l)`` or grouped ``(b g n l)`` (channel c uses
    group ``c // (d / g)``); D, delta_bias: ``(d)``. float32 and float64 run natively; float16 and
    bfloat16 are computed in float32 and cast back, as the reference does.
    """
    if load_extension() is None:
        raise RuntimeError(f"fused selective scan unavailable: {unavailable_reason()}")
    if u.device.type != "cpu":
        raise ValueError(f"fused selective scan runs on CPU tensors, got u on {u.device}")
    if A.is_complex():
        raise ValueError("fused selective scan supports real A only")
    if B.dim() not in (3, 4) or C.dim() not in (3, 4):
        raise ValueError(
            f"fused selective scan needs input-dependent B and C shaped (b n l) or (b g n l), "
            f"got B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    if A.shape[-1] > MAX_STATE:
        message = f"clearmamba: fused scan handles d_state <= {MAX_STATE}, got {A.shape[-1]}; using eager"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return _dispatch._IMPLS["eager"](u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    out_dtype = u.dtype
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32

    def prep(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(dtype).contiguous()

    B4 = B.unsqueeze(1) if B.dim() == 3 else B
    C4 = C.unsqueeze(1) if C.dim() == 3 else C
    args = [prep(t) for t in (u, delta, A, B4, C4, D, z, delta_bias)]
    out, _ = _FusedScan.apply(*args, delta_softplus, needs_grad(*args))
    return out.to(out_dtype)


def fused_available(u: torch.Tensor) -> bool:
    """``auto`` takes the fused kernel for CPU tensors when it builds; otherwise a one-line notice."""
    if u.device.type != "cpu":
        return False
    if is_available():
        return True
    notify_fallback("eager")
    return False


register_scan_impl("fused", fused_selective_scan, available=fused_available)
