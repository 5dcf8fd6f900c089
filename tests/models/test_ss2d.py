"""SS2D: cross-scan orderings, cross-merge as their inverse, and the reference initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from clearmamba.models import SS2D, cross_merge, cross_scan

H, W = 3, 5  # H != W so a transposition bug cannot hide


def index_grid(b=2, d=3):
    return torch.arange(b * d * H * W, dtype=torch.float32).view(b, d, H, W)


def test_cross_scan_orderings():
    x = index_grid()
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, H * W)
    for h in range(H):
        for w in range(W):
            row, col = h * W + w, w * H + h
            assert torch.equal(xs[:, 0, :, row], x[:, :, h, w])
            assert torch.equal(xs[:, 1, :, col], x[:, :, h, w])
            assert torch.equal(xs[:, 2, :, H * W - 1 - row], x[:, :, h, w])
            assert torch.equal(xs[:, 3, :, H * W - 1 - col], x[:, :, h, w])


def test_cross_merge_inverts_each_direction():
    x = index_grid()
    xs = cross_scan(x)
    for k in range(4):
        only_k = torch.zeros_like(xs)
        only_k[:, k] = xs[:, k]
        assert torch.equal(cross_merge(only_k, H, W), x), f"direction {k}"
    assert torch.equal(cross_merge(xs, H, W), 4 * x)


def test_init_matches_reference_recipe():
    torch.manual_seed(0)
    m = SS2D(d_model=32, d_state=16)
    assert m.d_inner == 64 and m.dt_rank == 2  # expand 2, ceil(32 / 16)
    dt = torch.nn.functional.softplus(m.dt_projs_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
    # log-uniform: log dt roughly uniform over [log 1e-3, log 0.1], mean at the midpoint
    assert abs(dt.log().mean().item() - 0.5 * (math.log(1e-3) + math.log(0.1))) < 0.25
    torch.testing.assert_close(-torch.exp(m.A_logs), -torch.arange(1.0, 17.0).expand(4 * 64, 16))
    assert torch.equal(m.Ds, torch.ones(4 * 64))
    assert m.x_proj_weight.abs().max() <= 64**-0.5
    assert m.dt_projs_weight.abs().max() <= 2**-0.5


def test_ss2d_shape_and_impl_agreement():
    torch.manual_seed(0)
    m = SS2D(d_model=8, d_state=4)
    x = torch.randn(2, H, W, 8, requires_grad=True)
    y_eager = m(x)
    assert y_eager.shape == x.shape
    g_eager = torch.autograd.grad(y_eager.square().sum(), [x, *m.parameters()])
    m.scan_impl = "reference"
    y_ref = m(x)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, *m.parameters()])
    torch.testing.assert_close(y_eager, y_ref, rtol=1e-4, atol=1e-5)
    for a, b in zip(g_eager, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_ss2d_mixes_the_whole_grid():
    # every output position depends on every input position (four directions cover the grid)
    torch.manual_seed(0)
    m = SS2D(d_model=4, d_state=4, d_conv=1)  # 1x1 conv: no spatial mixing outside the scan
    with torch.no_grad():
        m.dt_projs_bias.fill_(2.0)  # long memory so gradients do not underflow
    x = torch.randn(1, H, W, 4, requires_grad=True)
    (grad,) = torch.autograd.grad(m(x)[0, 0, 0].sum(), x)
    assert (grad.abs().sum(-1) > 0).all()


@pytest.mark.parametrize("bad", [(2, 3, 5), (2, 3, 5, 7)])
def test_ss2d_rejects_wrong_channels(bad):
    m = SS2D(d_model=8)
    with pytest.raises(ValueError, match=r"\[b, h, w, 8\]"):
        m(torch.randn(*bad))
