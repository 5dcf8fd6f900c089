"""Eager CPU selective scan: in-place sequential recurrence, streamed over time, reverse-scan backward.

Why it is shaped like this (measured on a 2-core CPU, see docs/benchmarks.md):
- state-major layout ``[l, b, g, n, e]`` (e = d/g channels per group): one time step is one
  contiguous slab and the broadcasts over n are outer-dim broadcasts (an innermost n=16 is ~4x slower);
- the recurrence is one in-place ``addcmul_`` per step into a reused buffer (fresh multi-hundred-MB
  tensors cost as much as an extra pass in page faults);
- time is streamed in chunks of ``chunk`` steps (64, fewer for very wide states; ``auto_chunk``),
  so memory holds only chunk-sized buffers plus the state at each chunk boundary; the backward
  recomputes a chunk's states from its boundary state (one extra forward) and runs the adjoint
  recurrence backwards in time:

    g_t = C_t gy_t + Ā_{t+1} ⊙ g_{t+1}                 (gradient w.r.t. the state x_t)
    P_t = g_t ⊙ Ā_t ⊙ x_{t-1}
    gΔ_t = Σ_n P_t A + Σ_n g_t B_t u_t,   gA = Σ_{b,t} P_t Δ_t
    gu_t = Δ_t Σ_n g_t B_t,   gB_t = Σ_{c∈group} g_t Δ_t u_t,   gC_t = Σ_{c∈group} x_t gy_t

The bias, softplus, D and z parts are cheap [b, d, l] element-wise ops left to autograd.
"""

from __future__ import annotations

import torch
from einops import rearrange

from .selective_scan import compute_dtype, register_scan_impl, scan_with_extras

MAX_CHUNK, MIN_CHUNK = 64, 8
CHUNK_BUFFER_BYTES = 32 * 2**20  # per [chunk, b, g, n, e] buffer; the backward holds four


def auto_chunk(b: int, d: int, n: int, itemsize: int = 4) -> int:
    """Steps per chunk: up to 64, fewer when one step's state is large (bounds memory by batch)."""
    per_step = b * d * n * itemsize
    return max(MIN_CHUNK, min(MAX_CHUNK, CHUNK_BUFFER_BYTES // per_step))


def to_state_major(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[b, (g e), l] -> [l, b, g, e] contiguous."""
    return rearrange(x, "b (g e) l -> l b g e", g=groups).contiguous()


def from_state_major(x: torch.Tensor) -> torch.Tensor:
    """[l, b, g, e] -> [b, (g e), l]."""
    return rearrange(x, "l b g e -> b (g e) l")


def _discretise(delta, du, A, B, decay, drive) -> None:
    """decay = exp(Δ A), drive = Δ u B, written into [m, b, g, n, e] buffers."""
    torch.mul(delta.unsqueeze(-2), A, out=decay)
    decay.exp_()
    torch.mul(du.unsqueeze(-2), B.unsqueeze(-1), out=drive)


def _recur(decay, states, h0) -> None:
    """states_t <- decay_t ⊙ states_{t-1} + states_t in place (states holds the drive on entry)."""
    hs, das = states.unbind(0), decay.unbind(0)
    hs[0].addcmul_(das[0], h0)
    for t in range(1, len(hs)):
        hs[t].addcmul_(das[t], hs[t - 1])


def scan_forward(delta, du, A, B, C, chunk: int, save_boundaries: bool):
    """y [l, b, g, e] and, if asked, the state before each chunk [chunks, b, g, n, e]."""
    l, b, g, e = delta.shape
    n = A.shape[1]
    m_max = min(chunk, l)
    decay = delta.new_empty(m_max, b, g, n, e)
    states = delta.new_empty(m_max, b, g, n, e)
    h = delta.new_zeros(b, g, n, e)
    y = delta.new_empty(l, b, g, e)
    starts = range(0, l, m_max)
    boundaries = delta.new_empty(len(starts), b, g, n, e) if save_boundaries else None
    for i, start in enumerate(starts):
        sl = slice(start, min(start + m_max, l))
        m = sl.stop - start
        if boundaries is not None:
            boundaries[i].copy_(h)
        _discretise(delta[sl], du[sl], A, B[sl], decay[:m], states[:m])
        _recur(decay[:m], states[:m], h)
        y[sl] = torch.matmul(C[sl].unsqueeze(-2), states[:m]).squeeze(-2)  # y_t = C_t · x_t
        h.copy_(states[m - 1])
    return y, boundaries


def scan_backward(gy, delta, u, A, B, C, boundaries, chunk: int):
    l, b, g, e = delta.shape
    n = A.shape[1]
    m_max = min(chunk, l)
    du = delta * u
    decay, states, gx, prod = (delta.new_empty(m_max, b, g, n, e) for _ in range(4))
    carry = delta.new_zeros(b, g, n, e)  # Ā_{t+1} ⊙ g_{t+1} for the step just after the chunk
    g_delta, g_u = torch.empty_like(delta), torch.empty_like(u)
    g_B, g_C = torch.empty_like(B), torch.empty_like(C)
    g_A = torch.zeros_like(A)
    starts = list(range(0, l, m_max))
    for i in reversed(range(len(starts))):
        sl = slice(starts[i], min(starts[i] + m_max, l))
        m = sl.stop - sl.start
        da, xs, gs, p = decay[:m], states[:m], gx[:m], prod[:m]
        h0 = boundaries[i]
        _discretise(delta[sl], du[sl], A, B[sl], da, xs)
        _recur(da, xs, h0)
        g_C[sl] = torch.matmul(xs, gy[sl].unsqueeze(-1)).squeeze(-1)
        # adjoint recurrence, backwards in time
        torch.mul(C[sl].unsqueeze(-1), gy[sl].unsqueeze(-2), out=gs)
        gs_t, da_t = gs.unbind(0), da.unbind(0)
        gs_t[m - 1].add_(carry)
        for t in range(m - 2, -1, -1):
            gs_t[t].addcmul_(da_t[t + 1], gs_t[t + 1])
        torch.mul(da[0], gs[0], out=carry)
        # P_t = g_t ⊙ Ā_t ⊙ x_{t-1}
        torch.mul(da[0], h0, out=p[0])
        if m > 1:
            torch.mul(da[1:], xs[:-1], out=p[1:])
        p.mul_(gs)
        g_B[sl] = torch.matmul(gs, du[sl].unsqueeze(-1)).squeeze(-1)
        gs_B = torch.matmul(B[sl].unsqueeze(-2), gs).squeeze(-2)  # Σ_n g_t B_t  [m, b, g, e]
        g_u[sl] = gs_B * delta[sl]
        # gΔ_t = Σ_n P_t A + u_t Σ_n g_t B_t  (da is free now: reuse it as scratch)
        torch.mul(p, A, out=da)
        torch.sum(da, dim=-2, out=g_delta[sl])
        g_delta[sl].addcmul_(gs_B, u[sl])
        # gA = Σ_{t,b} P_t Δ_t
        p.mul_(delta[sl].unsqueeze(-2))
        g_A += p.sum(dim=(0, 1))
    return g_delta, g_u, g_A, g_B, g_C


def member_first(t: torch.Tensor | None, dim: int | None, members: int) -> torch.Tensor | None:
    """Move vmap's member dimension to the front; an unbatched input is shared by every member."""
    if t is None:
        return None
    return t.expand(members, *t.shape) if dim is None else t.movedim(dim, 0)


def fold_members(t: torch.Tensor | None, dim: int | None, members: int, pattern: str) -> torch.Tensor | None:
    """Fold vmap's member dimension into the channel (or group) dimension, e.g. ``m b d l -> b (m d) l``.

    Exact because scan channels are independent and channel c reads group c // (d / g): after folding,
    member m's channels m d .. m d + d - 1 read member m's groups m g .. m g + g - 1.
    """
    t = member_first(t, dim, members)
    return None if t is None else rearrange(t, pattern).contiguous()


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


class EagerScanFn(torch.autograd.Function):
    """Core recurrence y = scan(Δ, u, A, B, C) with Δ already positive; tensors in the caller's layout.

    Returns ``(y, boundaries)``; ``boundaries`` (states at chunk starts, for the backward) is empty
    unless ``need_grad``. The ``setup_context`` form plus :meth:`vmap` let ``torch.func.vmap`` run it
    over stacked ensemble members by folding the member axis into the channels.
    """

    @staticmethod
    def forward(u, delta, A, B, C, chunk, need_grad):
        g = B.shape[1]
        u_s, delta_s = to_state_major(u, g), to_state_major(delta, g)
        A_s = rearrange(A, "(g e) n -> g n e", g=g).contiguous()
        B_s = rearrange(B, "b g n l -> l b g n").contiguous()
        C_s = rearrange(C, "b g n l -> l b g n").contiguous()
        y, boundaries = scan_forward(delta_s, delta_s * u_s, A_s, B_s, C_s, chunk, need_grad)
        return from_state_major(y), (boundaries if need_grad else y.new_empty(0))

    @staticmethod
    def setup_context(ctx, inputs, output):
        u, delta, A, B, C, chunk, need_grad = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.chunk = chunk
        if need_grad:
            ctx.save_for_backward(u, delta, A, B, C, output[1])

    @staticmethod
    def backward(ctx, gy, _g_boundaries):
        u, delta, A, B, C, boundaries = ctx.saved_tensors
        g = B.shape[1]
        delta_s = to_state_major(delta, g)
        u_s = to_state_major(u, g)
        A_s = rearrange(A, "(g e) n -> g n e", g=g).contiguous()
        B_s = rearrange(B, "b g n l -> l b g n").contiguous()
        C_s = rearrange(C, "b g n l -> l b g n").contiguous()
        gy_s = to_state_major(gy.to(delta_s.dtype), g)
        g_delta, g_u, g_A, g_B, g_C = scan_backward(gy_s, delta_s, u_s, A_s, B_s, C_s, boundaries, ctx.chunk)
        return (
            from_state_major(g_u),
            from_state_major(g_delta),
            rearrange(g_A, "g n e -> (g e) n"),
            rearrange(g_B, "l b g n -> b g n l"),
            rearrange(g_C, "l b g n -> b g n l"),
            None,
            None,
        )

    @staticmethod
    def vmap(info, in_dims, u, delta, A, B, C, chunk, need_grad):
        m = info.batch_size
        u_dim, delta_dim, A_dim, B_dim, C_dim = in_dims[:5]
        y, boundaries = EagerScanFn.apply(
            fold_members(u, u_dim, m, "m b d l -> b (m d) l"),
            fold_members(delta, delta_dim, m, "m b d l -> b (m d) l"),
            fold_members(A, A_dim, m, "m d n -> (m d) n"),
            fold_members(B, B_dim, m, "m b g n l -> b (m g) n l"),
            fold_members(C, C_dim, m, "m b g n l -> b (m g) n l"),
            chunk,
            need_grad,
        )
        # the boundaries are internal to the folded call (its backward uses them), so shared, not batched
        return (rearrange(y, "b (m d) l -> m b d l", m=m), boundaries), (0, None)


def selective_scan_eager(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, chunk: int | None = None
):
    """CPU-friendly exact scan; same semantics as ``selective_scan_reference``."""
    if chunk is None:
        chunk = auto_chunk(u.shape[0], u.shape[1], A.shape[1], torch.finfo(compute_dtype(u)).bits // 8)

    def core(u, delta, A, B, C):
        return EagerScanFn.apply(u, delta, A, B, C, chunk, needs_grad(u, delta, A, B, C))[0]

    return scan_with_extras(core, u, delta, A, B, C, D, z, delta_bias, delta_softplus)


register_scan_impl("eager", selective_scan_eager)
