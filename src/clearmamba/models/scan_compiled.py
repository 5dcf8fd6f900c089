"""Opt-in ``torch.compile``d selective scan (impl="compiled").

The sequence is cut into chunks of ``STEPS`` time steps; one compiled function runs a chunk
unrolled, so inductor emits a single fused, vectorised C++ loop with the state kept in registers:
the [b, d, l, n] tensors of the reference are never materialised, and AOTAutograd recomputes the
cheap element-wise work in the backward. The catch is compile time (seconds to a minute per
distinct shape, on first use) and the need for a C++ compiler at run time; hence opt-in.
``l`` is zero-padded to a multiple of ``STEPS``: a step with Δ = 0 has Ā = 1 and B̄u = 0, so it
leaves the state unchanged and every chunk has the same shape (one compile, not two).
"""

from __future__ import annotations

import functools

import torch
from einops import rearrange

from .scan_eager import from_state_major, to_state_major
from .selective_scan import register_scan_impl, scan_with_extras

STEPS = 8


def scan_steps(h, delta, du, A, B, C):
    """T unrolled steps. h [b g n e]; delta, du [T b g e]; A [g n e]; B, C [T b g n]."""
    ys = []
    for t in range(delta.shape[0]):
        # x_t = exp(Δ_t A) x_{t-1} + Δ_t u_t B_t ;  y_t = C_t · x_t
        h = torch.exp(delta[t].unsqueeze(-2) * A) * h + du[t].unsqueeze(-2) * B[t].unsqueeze(-1)
        ys.append((C[t].unsqueeze(-1) * h).sum(-2))
    return h, torch.stack(ys)


@functools.cache
def _compiled_steps():
    dynamo = torch._dynamo.config
    # 4 stages x train/eval x last-batch sizes exceed the default recompile budget of 8 shapes
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo, name):
            setattr(dynamo, name, max(getattr(dynamo, name), 64))
    return torch.compile(scan_steps, dynamic=False, fullgraph=True)


def compiled_available(u: torch.Tensor) -> bool:
    return hasattr(torch, "compile") and not u.is_cuda


def _pad_time(x: torch.Tensor, pad: int) -> torch.Tensor:
    return torch.cat([x, x.new_zeros(pad, *x.shape[1:])]) if pad else x


def compiled_core(u, delta, A, B, C, steps: int = STEPS):
    b, d, l = u.shape
    g = B.shape[1]
    pad = (-l) % steps
    delta_s = _pad_time(to_state_major(delta, g), pad)
    du_s = _pad_time(to_state_major(delta * u, g), pad)
    B_s = _pad_time(rearrange(B, "b g n l -> l b g n"), pad)
    C_s = _pad_time(rearrange(C, "b g n l -> l b g n"), pad)
    A_s = rearrange(A, "(g e) n -> g n e", g=g)
    fn = _compiled_steps()
    h = u.new_zeros(b, g, A.shape[1], d // g)
    ys = []
    # split(), not slicing in a loop: each slice of a grad-requiring tensor would get its own
    # full-size zero gradient in the backward (quadratic in l)
    for chunk in zip(delta_s.split(steps), du_s.split(steps), B_s.split(steps), C_s.split(steps)):
        h, y = fn(h, chunk[0], chunk[1], A_s, chunk[2], chunk[3])
        ys.append(y)
    return from_state_major(torch.cat(ys)[:l])


def selective_scan_compiled(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Same semantics as ``selective_scan_reference``; compiles per shape on first use."""
    return scan_with_extras(compiled_core, u, delta, A, B, C, D, z, delta_bias, delta_softplus)


register_scan_impl("compiled", selective_scan_compiled, available=compiled_available)
