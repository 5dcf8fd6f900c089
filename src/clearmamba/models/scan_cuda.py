"""GPU fast path: mamba_ssm's CUDA ``selective_scan_fn``, used only when it imports and u is on a GPU.

The import is guarded broadly: mamba_ssm 1.x imports its compiled extension unguarded, and newer
releases raise a RuntimeError when built without CUDA.
"""

from __future__ import annotations

import functools

import torch

from .selective_scan import register_scan_impl


@functools.cache
def _cuda_kernel():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return selective_scan_fn


def cuda_available(u: torch.Tensor) -> bool:
    return u.is_cuda and _cuda_kernel() is not None


def selective_scan_cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    kernel = _cuda_kernel()
    if kernel is None:
        raise RuntimeError("selective_scan impl 'cuda' needs mamba_ssm with its CUDA kernels installed")
    # the kernel wants float32 weights and a unit stride along l; grouped 4-D B/C are accepted as-is
    return kernel(
        u.contiguous(),
        delta.contiguous(),
        A.float().contiguous(),
        B.contiguous(),
        C.contiguous(),
        None if D is None else D.float(),
        z=None if z is None else z.contiguous(),
        delta_bias=None if delta_bias is None else delta_bias.float(),
        delta_softplus=delta_softplus,
    )


register_scan_impl("cuda", selective_scan_cuda, available=cuda_available)
