"""HaC as in the public CLEAR-Mamba code, the fused three-branch head, and their ClearMambaConfig options."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import clearmamba.models.baselines  # noqa: F401  (registers the clear_* models)
from clearmamba.models import create_model
from clearmamba.models.clear_mamba import ClearMambaConfig
from clearmamba.models.hac import DynamicProjection, PublicHaC, TokenMLP
from clearmamba.uncertainty.heads import FusedRaPHead, FusedSoftmaxHead
from tests.helpers import randomise


def reference_dynamic_projection(m: DynamicProjection, x: torch.Tensor) -> torch.Tensor:
    """The formula one sample at a time, with explicit matrices (eval mode: BN uses running statistics)."""
    f, r = m.feature_dim, m.reduced_dim
    features = m.embed(x)
    outs = []
    for i in range(x.shape[0]):
        fi = features[i]  # F h w
        tokens = fi.reshape(f, -1).T  # (h w) F
        down = m.down_generator(fi.mean(dim=(1, 2)))
        w_down, b_down = down[: r * f].reshape(r, f), down[r * f :]
        v = m.token_mlp(tokens @ w_down.T + b_down)  # (h w) R
        up = m.up_generator(v.mean(0))
        w_up, b_up = up[: f * r].reshape(f, r), up[f * r :]
        mapped = (v @ w_up.T + b_up).T.reshape(f, *fi.shape[1:])
        outs.append(m.out_proj(mapped[None])[0] + fi)
    return torch.stack(outs)


def test_dynamic_projection_generates_its_matrices_per_sample():
    m = randomise(DynamicProjection(in_dim=6, feature_dim=12, reduction=4)).eval()
    assert (m.feature_dim, m.reduced_dim) == (12, 3)
    x = torch.randn(3, 6, 5, 4)
    out = m(x)
    assert out.shape == (3, 12, 5, 4)
    torch.testing.assert_close(out, reference_dynamic_projection(m, x), rtol=1e-4, atol=1e-4)
    # a sample's output depends on that sample alone
    y = x.clone()
    y[1:] = torch.randn(2, 6, 5, 4)
    torch.testing.assert_close(m(y)[0], out[0])
    with pytest.raises(ValueError, match="reduction"):
        DynamicProjection(6, 4, reduction=8)


@pytest.mark.parametrize("gated", [False, True])
def test_token_mlp_is_the_written_formula(gated):
    m = randomise(TokenMLP(5, gated=gated), seed=1)
    u = torch.randn(2, 7, 5)
    h = nn.functional.layer_norm(u, (5,), m.norm.weight, m.norm.bias) @ m.fc1.weight.T + m.fc1.bias
    if gated:  # W3 (SiLU(W1 u) * W2 u)
        value, gate = h.chunk(2, -1)
        expected = (gate * torch.sigmoid(gate) * value) @ m.fc2.weight.T + m.fc2.bias
    else:  # W2 SiLU(W1 u)
        expected = (h * torch.sigmoid(h)) @ m.fc2.weight.T + m.fc2.bias
    torch.testing.assert_close(m(u), expected, rtol=1e-5, atol=1e-5)


def test_public_hac_is_a_film_of_the_last_map_from_the_resized_early_map():
    m = randomise(PublicHaC(early_dim=8, dim=16, feature_dim=12, reduction=2), seed=2).eval()
    early, last = torch.randn(2, 8, 8, 8), torch.randn(2, 16, 2, 2)
    out, dynamic = m(early, last)
    assert out.shape == (2, 16, 2, 2) and dynamic.shape == (2, 12, 2, 2)
    resized = nn.functional.interpolate(m.dynamic(early), size=(2, 2), mode="bilinear", align_corners=False)
    torch.testing.assert_close(dynamic, resized)
    linear, norm = m.to_film
    film = nn.functional.layer_norm(resized.permute(0, 2, 3, 1) @ linear.weight.T + linear.bias, (32,),
                                    norm.weight, norm.bias).permute(0, 3, 1, 2)  # fmt: skip
    torch.testing.assert_close(out, last * film[:, :16] + film[:, 16:], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="PublicHaC"):
        m(early, torch.randn(2, 15, 2, 2))


VARIANTS = [
    {"hac_variant": "public"},
    {"hac_variant": "public", "head_fusion": "three_branch", "hac_reduction": 2, "hac_feature_dim": 24},
    {"hac_variant": "public", "hac_gated": True, "head": "softmax"},
    {"head_fusion": "three_branch", "head_proj_dim": 32},
    {"hac": False, "head_fusion": "three_branch", "head": "softmax"},
]


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_hac_and_head_options_round_trip_through_create_model_kwargs(options):
    torch.manual_seed(0)
    kw = {"num_classes": 3, "in_chans": 1, "temporal": "mean", **options}
    model = create_model("clear_mamba_tiny", **kw).eval()
    for key, value in options.items():
        assert getattr(model.cfg, key) == value
    assert ClearMambaConfig(**model.cfg.to_dict()) == model.cfg
    # the kwargs as a checkpoint stores them (JSON) rebuild the same architecture and predictions
    rebuilt = create_model("clear_mamba_tiny", **json.loads(json.dumps(kw))).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x, times = torch.rand(2, 3, 1, 32, 32), torch.rand(2, 3) * 100
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x, times).probs, model(x, times).probs, rtol=0, atol=0)
    if options.get("hac_variant") == "public":
        assert isinstance(model.encoder.public_hac, PublicHaC) and model.encoder.last_hac is None
    if options.get("head_fusion") == "three_branch":
        assert isinstance(model.head, (FusedRaPHead, FusedSoftmaxHead))
        assert model.head.fusion.branch_dims == model.encoder.branch_dims


def test_the_three_branch_encoder_concatenates_dynamic_max_and_average_features():
    torch.manual_seed(1)
    model = create_model("clear_mamba_tiny", num_classes=3, in_chans=1, hac_variant="public",
                         head_fusion="three_branch").eval()  # fmt: skip
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        features, dynamic = model.encoder.maps(x)
        expected = torch.cat([dynamic.mean((2, 3)), features.amax((2, 3)), features.mean((2, 3))], -1)
        torch.testing.assert_close(model.encoder(x), expected)
    assert model.encoder.branch_dims == (16, 128, 128) and model.num_features == 272


def test_padded_exams_predict_like_unpadded_ones_with_the_public_options():
    torch.manual_seed(2)
    model = create_model("clear_mamba_tiny", num_classes=3, in_chans=1, hac_variant="public",
                         head_fusion="three_branch", temporal="mamba").eval()  # fmt: skip
    frames, times = torch.rand(2, 5, 1, 32, 32), torch.cumsum(torch.rand(2, 5) * 20 + 1, 1)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    frames[~mask] = 50.0
    with torch.no_grad():
        batched = model(frames, times, mask).probs
        alone = torch.cat([model(frames[:1, :3], times[:1, :3]).probs, model(frames[1:], times[1:]).probs])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-6)


def test_bad_options_are_named():
    for options, field in (({"hac_variant": "hyper"}, "hac_variant"), ({"head_fusion": "two"}, "head_fusion"),
                           ({"hac_variant": "public", "hac_stages": "all"}, "hac_stages"),
                           ({"hac_reduction": 0}, "hac_reduction")):  # fmt: skip
        with pytest.raises(ValueError, match=field):
            create_model("clear_mamba_tiny", num_classes=3, **options)
    pytest.importorskip("monai")
    with pytest.raises(ValueError, match="MedMamba"):
        create_model("clear_resnet18", num_classes=3, in_chans=1, hac_variant="public")
