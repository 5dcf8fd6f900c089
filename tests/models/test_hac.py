import pytest
import torch
from torch import nn

import clearmamba.models.baselines  # noqa: F401  (registers the clear_* models)
from clearmamba.models import create_model
from clearmamba.models.hac import HaC


@pytest.mark.parametrize("channels_last", [False, True])
def test_hac_is_the_identity_at_initialisation(channels_last):
    torch.manual_seed(0)
    hac = HaC(12, channels_last=channels_last)
    x = torch.randn(3, 5, 7, 12) if channels_last else torch.randn(3, 12, 5, 7)
    assert torch.equal(hac(x), x)


def test_hac_matches_the_film_formula_written_out():
    torch.manual_seed(1)
    hac = HaC(8, hidden=16)
    nn.init.normal_(hac.to_film.weight, std=0.5)
    nn.init.normal_(hac.to_film.bias, std=0.5)
    x = torch.randn(2, 8, 4, 3)
    # independent evaluation: z = GAP(X), two Linear-LN-GELU layers, then gamma, beta, sigmoid gate
    z = x.mean((2, 3))
    h = z
    for linear, norm in ((hac.hyper[0], hac.hyper[1]), (hac.hyper[3], hac.hyper[4])):
        h = h @ linear.weight.T + linear.bias
        h = nn.functional.layer_norm(h, (16,), norm.weight, norm.bias)
        h = 0.5 * h * (1 + torch.erf(h / 2**0.5))
    out = h @ hac.to_film.weight.T + hac.to_film.bias
    gamma, beta, a = out[:, :8, None, None], out[:, 8:16, None, None], torch.sigmoid(out[:, 16:, None, None])
    expected = x + a * ((1 + gamma) * x + beta - x)
    torch.testing.assert_close(hac(x), expected, rtol=1e-5, atol=1e-6)


def test_hac_changes_its_output_after_one_training_step():
    torch.manual_seed(2)
    hac = HaC(6)
    x = torch.randn(4, 6, 3, 3)
    target = torch.randn_like(x)
    optimizer = torch.optim.SGD(hac.parameters(), lr=0.1)
    loss = (hac(x) - target).pow(2).mean()
    loss.backward()
    assert hac.to_film.weight.grad.abs().sum() > 0
    optimizer.step()
    with torch.no_grad():
        assert (hac(x) - x).abs().max() > 1e-4


def test_hac_rejects_a_wrong_channel_count():
    with pytest.raises(ValueError, match="channels"):
        HaC(4)(torch.randn(1, 5, 2, 2))


@pytest.mark.parametrize("stages", ["last", "all"])
def test_clear_mamba_with_fresh_hac_predicts_like_the_model_without_hac(stages):
    torch.manual_seed(3)
    kw = {"num_classes": 3, "in_chans": 1, "temporal": "mean"}
    with_hac = create_model("clear_mamba_tiny", hac=True, hac_stages=stages, **kw).eval()
    without = create_model("clear_mamba_tiny", hac=False, **kw).eval()
    missing = without.load_state_dict(with_hac.state_dict(), strict=False)
    assert not missing.missing_keys and all("hac" in k for k in missing.unexpected_keys)
    x = torch.rand(2, 2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(with_hac(x).probs, without(x).probs, rtol=0, atol=0)
