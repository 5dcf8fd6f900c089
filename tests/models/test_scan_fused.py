"""The fused C++ scan against the reference loop, gradcheck, the cache and the fallback path.

The oracle is ``selective_scan_reference`` run in float64 on the same inputs, so the float32 kernel is
judged against the exact answer; errors are taken relative to the size of each tensor
(max |fused - ref| <= 1e-4 * max(1, max |ref|)).
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from clearmamba.models import resolve_impl, scan_fused, selective_scan, selective_scan_reference

needs_kernel = pytest.mark.skipif(
    not scan_fused.is_available(), reason=f"fused scan not built: {scan_fused.unavailable_reason()}"
)


def make_inputs(b, groups, dim_per_group, n, length, *, z, D, bias, softplus=True, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    d = groups * dim_per_group

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=dtype)).requires_grad_()

    # A = -exp(A_log) with A_log from the S4D-real init, jittered so channels differ
    A = -torch.arange(1, n + 1, dtype=dtype).repeat(d, 1) * torch.rand(d, n, generator=gen, dtype=dtype)
    delta = 0.5 * torch.randn(b, d, length, generator=gen, dtype=dtype)
    inputs = {
        "u": rand(b, d, length),
        # without softplus a negative step would make the scan grow without bound
        "delta": (delta if softplus else delta.abs()).requires_grad_(),
        "A": A.requires_grad_(),
        "B": rand(b, groups, n, length) if groups > 1 else rand(b, n, length),
        "C": rand(b, groups, n, length) if groups > 1 else rand(b, n, length),
        "D": rand(d) if D else None,
        "z": rand(b, d, length) if z else None,
        "delta_bias": rand(d, scale=0.5) if bias else None,
    }
    return inputs


def run_with_grads(fn, inputs, softplus, grad_out=None):
    out = fn(**inputs, delta_softplus=softplus)
    if grad_out is None:
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    names = [k for k, v in inputs.items() if v is not None]
    grads = torch.autograd.grad(out, [inputs[k] for k in names], grad_out)
    return out, dict(zip(names, grads)), grad_out


def reference_with_grads(inputs, softplus, grad_out):
    """The reference loop in float64 on the same values: the exact answer for a float32 kernel."""
    exact = {k: None if v is None else v.detach().double().requires_grad_() for k, v in inputs.items()}
    return run_with_grads(selective_scan_reference, exact, softplus, grad_out.double())[:2]


def assert_close_scaled(actual, expected, name, tol=1e-4):
    scale = max(1.0, expected.abs().max().item())
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol * scale, f"{name}: max error {err:.3g} > {tol} * {scale:.3g}"


@needs_kernel
@pytest.mark.parametrize(
    "groups, dim_per_group, n, length, z, D, bias, softplus",
    [
        (4, 20, 16, 37, True, True, True, True),  # grouped, lanes padded (20 = 16 + 4), odd length
        (1, 16, 16, 70, False, False, False, False),  # shared B/C [b, n, l], bare scan, 3 chunks
        (2, 33, 16, 33, False, True, True, True),  # SS2D-like: D, bias, softplus, no z
        (3, 5, 8, 9, True, False, False, True),  # d_state 8 takes the generic-n path
    ],
)
def test_forward_and_every_gradient_match_reference(groups, dim_per_group, n, length, z, D, bias, softplus):
    inputs = make_inputs(2, groups, dim_per_group, n, length, z=z, D=D, bias=bias, softplus=softplus)
    out, grads, grad_out = run_with_grads(scan_fused.fused_selective_scan, inputs, softplus)
    ref_out, ref_grads = reference_with_grads(inputs, softplus, grad_out)
    assert out.dtype == torch.float32 and out.shape == ref_out.shape
    assert_close_scaled(out, ref_out, "out")
    assert set(grads) == set(ref_grads)
    for name in grads:
        assert grads[name].shape == inputs[name].shape
        assert_close_scaled(grads[name], ref_grads[name], f"grad {name}")


@needs_kernel
def test_large_steps_stay_finite_and_match():
    # Δ up to ~20 with A down to -16: per-step log-decay near -300, far below exp's float32 range
    inputs = make_inputs(1, 2, 16, 16, 41, z=True, D=True, bias=False)
    with torch.no_grad():
        inputs["delta"].mul_(8).add_(4)
    out, grads, grad_out = run_with_grads(scan_fused.fused_selective_scan, inputs, True)
    ref_out, ref_grads = reference_with_grads(inputs, True, grad_out)
    assert_close_scaled(out, ref_out, "out")
    for name in grads:
        assert torch.isfinite(grads[name]).all()
        assert_close_scaled(grads[name], ref_grads[name], f"grad {name}")


@needs_kernel
@pytest.mark.parametrize("n", [16, 3])
def test_gradcheck_float64(n):
    inputs = make_inputs(1, 2, 3, n, 5, z=True, D=True, bias=True, dtype=torch.float64)
    names = list(inputs)

    def fn(*args):
        return scan_fused.fused_selective_scan(**dict(zip(names, args)), delta_softplus=True)

    # full Jacobians for the generic-n kernel; random projections (fast mode) for the n=16 one
    leaves = tuple(inputs[k] for k in names)
    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, fast_mode=n == 16)


@needs_kernel
def test_auto_picks_fused_on_cpu_and_half_precision_round_trips():
    u = torch.randn(1, 4, 6)
    assert resolve_impl("auto", u) == "fused"
    inputs = make_inputs(1, 1, 4, 16, 6, z=False, D=True, bias=False)
    half = {k: None if v is None else v.detach().bfloat16() for k, v in inputs.items()}
    out = selective_scan(**half, impl="fused")
    ref = selective_scan_reference(**half)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)


@needs_kernel
def test_bad_input_is_refused_with_a_named_shape():
    inputs = make_inputs(1, 2, 4, 16, 6, z=False, D=False, bias=False)
    inputs["C"] = inputs["C"][:, :1]
    with pytest.raises(RuntimeError, match="C must match B"):
        scan_fused.fused_selective_scan(**inputs)


@needs_kernel
def test_second_process_reuses_the_cached_build():
    library = next(Path(scan_fused.build_directory()).glob("*.so"))
    before = library.stat().st_mtime_ns
    code = "from clearmamba.models import scan_fused; assert scan_fused.is_available()"
    env = {**os.environ, "PYTHONPATH": str(Path(scan_fused.__file__).parents[2])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    assert library.stat().st_mtime_ns == before


def test_env_var_disables_fused_and_eager_fallback_matches(monkeypatch):
    monkeypatch.setenv(scan_fused.DISABLE_ENV, "1")
    monkeypatch.setattr(scan_fused, "_notified", False)
    inputs = make_inputs(2, 2, 6, 16, 11, z=True, D=True, bias=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_impl("auto", inputs["u"]) == "eager"
        out, grads, grad_out = run_with_grads(selective_scan, inputs, True)
    notices = [str(w.message) for w in caught if scan_fused.DISABLE_ENV in str(w.message)]
    assert len(notices) == 1 and "\n" not in notices[0]
    assert not scan_fused.is_available()
    with pytest.raises(RuntimeError, match="unavailable"):
        resolve_impl("fused", inputs["u"])
    ref_out, ref_grads = reference_with_grads(inputs, True, grad_out)
    assert_close_scaled(out, ref_out, "out")
    for name in grads:
        assert_close_scaled(grads[name], ref_grads[name], f"grad {name}")


@needs_kernel
def test_state_wider_than_the_kernel_falls_back_to_eager():
    inputs = make_inputs(1, 1, 3, scan_fused.MAX_STATE + 1, 4, z=False, D=True, bias=False)
    with pytest.warns(RuntimeWarning, match="d_state"):
        out = scan_fused.fused_selective_scan(**inputs)
    assert_close_scaled(out, selective_scan_reference(**inputs), "out")
