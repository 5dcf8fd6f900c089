"""The Mamba selective scan, one signature, several implementations.

    Δ = softplus(delta + delta_bias)                      (bias and softplus optional)
    Ā_t = exp(Δ_t A),   B̄u_t = Δ_t B_t u_t               (ZOH for A, Euler for B)
    x_t = Ā_t ⊙ x_{t-1} + B̄u_t,   x_{-1} = 0
    y_t = C_t · x_t + D u_t,   out = y ⊙ silu(z)          (D and z optional)

Shapes (as mamba_ssm's ``selective_scan_ref``): ``u, delta, z: [b, d, l]``; ``A: [d, n]``;
``B, C: [b, n, l]`` or grouped ``[b, g, n, l]`` where channel c reads group ``c // (d / g)``;
``D, delta_bias: [d]``. Maths in float32 (float64 stays float64); the output has ``u``'s dtype.

Implementations live in ``_IMPLS`` (name -> callable with the signature of ``selective_scan``
minus ``impl``); ``register_scan_impl`` adds one (the fused C++ kernel registers ``"fused"``).
``impl="auto"`` walks ``_AUTO_ORDER`` and takes the first registered implementation whose
availability predicate accepts the input: ``cuda`` for GPU tensors when mamba_ssm imports, then
``fused`` when registered and available, else ``eager``. ``compiled`` is opt-in only (it compiles
per shape). ``reference`` is the readable oracle used by the tests.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import repeat

ScanFn = Callable[..., torch.Tensor]

_IMPLS: dict[str, ScanFn] = {}
_AVAILABLE: dict[str, Callable[[torch.Tensor], bool]] = {}
# preference order for impl="auto"; names that are not registered are skipped
_AUTO_ORDER: tuple[str, ...] = ("cuda", "fused", "eager")


def register_scan_impl(
    name: str, fn: ScanFn, available: Callable[[torch.Tensor], bool] | None = None
) -> None:
    """Add (or replace) an implementation; ``available(u)`` says whether ``auto`` may pick it."""
    _IMPLS[name] = fn
    _AVAILABLE[name] = available if available is not None else (lambda u: True)


def scan_impls() -> list[str]:
    """Names of the registered implementations (some may be unavailable on this machine)."""
    return sorted(_IMPLS)


def resolve_impl(impl: str, u: torch.Tensor) -> str:
    """The concrete implementation name ``impl`` stands for, given the input ``u``."""
    if impl == "auto":
        for name in _AUTO_ORDER:
            if name in _IMPLS and _AVAILABLE[name](u):
                return name
        return "eager"
    if impl not in _IMPLS:
        raise ValueError(f"selective_scan: unknown impl {impl!r}; expected 'auto' or one of {scan_impls()}")
    if not _AVAILABLE[impl](u):
        raise RuntimeError(f"selective_scan: impl {impl!r} is unavailable for a {u.device.type} tensor here")
    return impl


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    impl: str = "auto",
) -> torch.Tensor:
    """Run the selective scan with implementation ``impl`` (see the module docstring)."""
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    return _IMPLS[resolve_impl(impl, u)](u, delta, A, B, C, D, z, delta_bias, delta_softplus)


def check_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> None:
    """Raise a ValueError naming the argument whose shape does not fit ``u: [b, d, l]``."""
    if u.ndim != 3:
        raise ValueError(f"selective_scan: u must be [b, d, l], got shape {tuple(u.shape)}")
    b, d, l = u.shape
    if delta.shape != u.shape:
        raise ValueError(f"selective_scan: delta must match u {tuple(u.shape)}, got {tuple(delta.shape)}")
    if A.ndim != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan: A must be [d={d}, n], got {tuple(A.shape)}")
    n = A.shape[1]
    for name, t in (("B", B), ("C", C)):
        if A.is_complex() or t.is_complex():
            raise ValueError(f"selective_scan: complex A/{name} are not supported")
        ok = (t.ndim == 3 and t.shape == (b, n, l)) or (
            t.ndim == 4 and t.shape[0] == b and t.shape[2:] == (n, l) and d % t.shape[1] == 0
        )
        if not ok:
            raise ValueError(
                f"selective_scan: {name} must be [b={b}, n={n}, l={l}] or [b, g, n, l] with g | d={d}, "
                f"got {tuple(t.shape)}"
            )
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (d,):
            raise ValueError(f"selective_scan: {name} must be [d={d}], got {tuple(t.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan: z must have u's shape {tuple(u.shape)}, got {tuple(z.shape)}")


def as_grouped(t: torch.Tensor) -> torch.Tensor:
    """[b, n, l] -> [b, 1, n, l]; grouped [b, g, n, l] unchanged."""
    return t.unsqueeze(1) if t.ndim == 3 else t


def compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.promote_types(u.dtype, torch.float32)


def scan_with_extras(core, u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Apply the cheap [b, d, l] parts (bias, softplus, D, z) around ``core(u, Δ, A, B, C) -> y``.

    ``core`` gets float tensors and grouped [b, g, n, l] B/C; autograd handles the parts done here.
    """
    dtype_in, dt = u.dtype, compute_dtype(u)
    u, delta, A = u.to(dt), delta.to(dt), A.to(dt)
    B, C = as_grouped(B).to(dt), as_grouped(C).to(dt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    y = core(u, delta, A, B, C)
    if D is not None:
        y = y + u * D.to(dt)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dt))
    return y.to(dtype_in)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Plain sequential loop, written to be read; the oracle for every other implementation."""
    dtype_in, dt = u.dtype, compute_dtype(u)
    u, delta, A = u.to(dt), delta.to(dt), A.to(dt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dt)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, l = u.shape
    # each channel reads its group's B_t and C_t: [b, g, n, l] -> [b, d, n, l]
    B = repeat(as_grouped(B).to(dt), "b g n l -> b (g r) n l", r=d // as_grouped(B).shape[1])
    C = repeat(as_grouped(C).to(dt), "b g n l -> b (g r) n l", r=d // as_grouped(C).shape[1])
    decay = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))  # Ā = exp(Δ A)
    drive = torch.einsum("bdl,bdnl,bdl->bdln", delta, B, u)  # B̄u = Δ B u
    x = u.new_zeros(b, d, A.shape[1], dtype=dt)
    ys = []
    for t in range(l):
        x = decay[:, :, t] * x + drive[:, :, t]  # x_t = Ā_t x_{t-1} + B̄u_t
        ys.append(torch.einsum("bdn,bdn->bd", x, C[:, :, :, t]))  # y_t = C_t · x_t
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D.to(dt)[:, None]
    if z is not None:
        y = y * F.silu(z.to(dt))
    return y.to(dtype_in)


register_scan_impl("reference", selective_scan_reference)
