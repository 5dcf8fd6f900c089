"""vmap over stacked ensemble members through the scan's autograd Functions equals the member loop.

The Functions' vmap rule folds the member axis into the channels; the oracle is a plain Python loop
over members calling the same scan, so any mix-up of members, groups or channels shows as a mismatch.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import vmap

from clearmamba.models import create_model, scan_fused, selective_scan
from clearmamba.uncertainty import DeepEnsemble

MEMBERS, B, G, E, N, L = 3, 2, 2, 3, 4, 7  # odd length, grouped B/C (d = G * E channels)

impls = ["eager"] + (["fused"] if scan_fused.is_available() else [])


def member_inputs():
    gen = torch.Generator().manual_seed(0)
    d = G * E

    def rand(*shape):
        return torch.randn(*shape, generator=gen)

    return {
        # per-member parameters: A, D, delta_bias
        "A": -torch.rand(MEMBERS, d, N, generator=gen) * torch.arange(1, N + 1),
        "D": rand(MEMBERS, d),
        "delta_bias": 0.5 * rand(MEMBERS, d),
        # per-member activations
        "u": rand(MEMBERS, B, d, L),
        "delta": 0.5 * rand(MEMBERS, B, d, L),
        "B": rand(MEMBERS, B, G, N, L),
        "C": rand(MEMBERS, B, G, N, L),
        "z": rand(MEMBERS, B, d, L),
    }


@pytest.mark.parametrize("impl", impls)
@pytest.mark.parametrize("shared_input", [False, True])
def test_vmapped_scan_equals_member_loop(impl, shared_input):
    inputs = member_inputs()
    if shared_input:  # u unbatched: every member reads the same sequence, as in an ensemble's first layer
        inputs["u"] = inputs["u"][0]
    names = list(inputs)

    def scan(*args):
        return selective_scan(**dict(zip(names, args)), delta_softplus=True, impl=impl)

    in_dims = tuple(None if (shared_input and k == "u") else 0 for k in names)
    with torch.no_grad():
        vmapped = vmap(scan, in_dims=in_dims)(*inputs.values())
        loop = torch.stack(
            [scan(*(v if dim is None else v[m] for v, dim in zip(inputs.values(), in_dims))) for m in range(MEMBERS)]
        )
    assert vmapped.shape == (MEMBERS, B, G * E, L)
    torch.testing.assert_close(vmapped, loop, rtol=1e-5, atol=1e-5)
    # members really differ, so a member mix-up could not pass
    assert (loop[0] - loop[1]).abs().max() > 1e-2


@pytest.mark.parametrize("impl", impls)
def test_vectorised_medmamba_ensemble_equals_loop(impl, monkeypatch):
    import importlib

    dispatch = importlib.import_module("clearmamba.models.selective_scan")

    monkeypatch.setattr(dispatch, "resolve_impl", lambda name, u: impl)  # every scan in the model uses impl
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(create_model("medmamba_nano", num_classes=3, in_chans=1).eval())
    ensemble = DeepEnsemble(members, vectorize=True).eval()
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # forward_vectorized raises (no silent loop) if vmap cannot run
        vectorised = ensemble.forward_vectorized(x)
        loop = ensemble.forward_loop(x)
    torch.testing.assert_close(vectorised.members, loop.members, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loop.members[1], members[1](x).softmax(-1), rtol=1e-4, atol=1e-5)
    assert (loop.members[0] - loop.members[1]).abs().max() > 1e-4
    with torch.no_grad():
        ensemble(x)
    assert ensemble.vectorize  # the public call stayed vectorised (no fallback to the loop)

