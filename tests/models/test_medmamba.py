"""MedMamba: sizes against an independent parameter count, shapes, blocks, registry, and learning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from clearmamba.models import (
    MedMamba,
    MedMambaConfig,
    channel_shuffle,
    create_model,
    list_models,
    register_model,
)
from clearmamba.models.medmamba import SIZES


def expected_params(depths, dims, d_state=16, in_chans=3, num_classes=9, patch=4) -> int:
    """Parameter count written from the architecture description (MedMamba.py), not from the model."""

    def block(c):
        h, n, r = c // 2, d_state, math.ceil(c // 2 / 16)  # SS2D: d_model = c/2, d_inner = c
        ss2d = h * 2 * c + (9 * c + c) + 4 * (r + 2 * n) * c + 4 * c * r + 4 * c + 4 * c * n + 4 * c
        ss2d += 2 * c + c * h  # out_norm, out_proj
        conv_branch = 3 * 2 * h + 2 * (9 * h * h + h) + (h * h + h)
        return 2 * h + ss2d + conv_branch  # + ln_1

    total = in_chans * patch * patch * dims[0] + dims[0] + 2 * dims[0]
    for i, (depth, c) in enumerate(zip(depths, dims)):
        total += depth * block(c)
        if i < len(dims) - 1:
            total += 8 * c + 8 * c * c  # PatchMerging: LayerNorm(4c) + Linear(4c, 2c)
    return total + dims[-1] * num_classes + num_classes


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "name,published_millions", [("medmamba_t", 14.46), ("medmamba_s", 18.63), ("medmamba_b", 39.87)]
)
def test_param_counts_match_public_code(name, published_millions):
    with torch.device("meta"):
        model = create_model(name, num_classes=9)
    cfg = SIZES[name]
    count = n_params(model)
    assert count == expected_params(cfg.depths, cfg.dims, cfg.d_state)
    assert round(count / 1e6, 2) == published_millions  # counted from the upstream file


def test_registry_lists_all_sizes_and_rejects_unknowns():
    assert {"medmamba_nano", "medmamba_tiny", "medmamba_t", "medmamba_s", "medmamba_b"} <= set(list_models())
    assert list_models("medmamba_t*") == ["medmamba_t", "medmamba_tiny"]
    with pytest.raises(ValueError, match="unknown model 'medmamba_xl'.*medmamba_b"):
        create_model("medmamba_xl")
    with pytest.raises(ValueError, match="unknown option.*depht"):
        create_model("medmamba_nano", depht=3)


def test_register_model_rejects_a_second_factory_with_the_same_name():
    def medmamba_nano(**kw):  # same name as the built-in factory
        return torch.nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(medmamba_nano)


def test_config_validation():
    with pytest.raises(ValueError, match="dims must double"):
        MedMambaConfig(depths=(1, 1), dims=(16, 48))
    with pytest.raises(ValueError, match="even"):
        MedMambaConfig(depths=(1,), dims=(15,))
    with pytest.raises(ValueError, match="stem"):
        MedMambaConfig(stem="resnet")
    with pytest.raises(ValueError, match="power of two"):
        MedMambaConfig(stem="conv", patch_size=3)


def expected_grid(side: int) -> int:
    side = math.ceil(side / 4)  # patch embedding pads to a multiple of 4
    for _ in range(3):
        side = math.ceil(side / 2)  # patch merging pads odd grids
    return side


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("hw", [(28, 28), (16, 45), (64, 64), (100, 76), (224, 224)])
def test_output_shapes_for_any_input_size(in_chans, hw):
    torch.manual_seed(0)
    model = create_model("medmamba_nano", num_classes=5, in_chans=in_chans).eval()
    x = torch.randn(2, in_chans, *hw)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    assert feats.shape == (2, model.num_features, expected_grid(hw[0]), expected_grid(hw[1]))
    assert model.num_features == 128
    assert logits.shape == (2, 5)
    torch.testing.assert_close(model.forward_head(feats), logits)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("hw", [(28, 28), (16, 45), (33, 31)])
def test_conv_stem_downsamples_like_the_patch_embedding(hw):
    patch = create_model("medmamba_nano", in_chans=1).eval()
    conv = create_model("medmamba_nano", in_chans=1, stem="conv", stem_chans=8).eval()
    x = torch.randn(2, 1, *hw)
    with torch.no_grad():
        assert conv.forward_features(x).shape == patch.forward_features(x).shape
    # the stem replaces the 4x4 patchify (16 -> 16 weights + bias) by two 3x3 conv-BN layers and a 1x1 embedding
    stem = (9 * 1 * 8 + 2 * 8) + (9 * 8 * 8 + 2 * 8) + (8 * 16 + 16)
    assert n_params(conv) - n_params(patch) == stem - (16 * 16 + 16)


def test_wrong_channel_count_is_a_clear_error():
    model = create_model("medmamba_nano", in_chans=1)
    with pytest.raises(ValueError, match=r"\[b, 1, h, w\]"):
        model(torch.randn(1, 3, 32, 32))


def test_channel_shuffle_interleaves_halves():
    a = torch.arange(4.0).view(1, 1, 1, 4)
    b = torch.arange(10.0, 14.0).view(1, 1, 1, 4)
    assert channel_shuffle(torch.cat([a, b], -1), 2).flatten().tolist() == [0, 10, 1, 11, 2, 12, 3, 13]


def test_block_wiring_conv_half_and_ssm_half():
    # the conv branch reads the first half of the channels and lands on even channels;
    # the SSM branch reads the second half and lands on odd channels
    torch.manual_seed(0)
    model = create_model("medmamba_nano", depths=(1, 1, 1, 1)).eval()
    block = model.layers[0].blocks[0]
    x = torch.randn(1, 4, 5, 16)
    with torch.no_grad():
        out = block(x) - x
        conv = block.conv33conv33conv11(x[..., :8].permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        ssm = block.self_attention(block.ln_1(x[..., 8:]))
    torch.testing.assert_close(out[..., 0::2], conv)
    torch.testing.assert_close(out[..., 1::2], ssm)


def test_state_dict_uses_medmamba_names():
    keys = set(create_model("medmamba_nano").state_dict())
    for key in [
        "patch_embed.proj.weight",
        "patch_embed.norm.weight",
        "layers.0.blocks.0.ln_1.weight",
        "layers.0.blocks.0.self_attention.in_proj.weight",
        "layers.0.blocks.0.self_attention.x_proj_weight",
        "layers.0.blocks.0.self_attention.dt_projs_bias",
        "layers.0.blocks.0.self_attention.A_logs",
        "layers.0.blocks.0.conv33conv33conv11.7.weight",
        "layers.0.downsample.reduction.weight",
        "head.weight",
    ]:
        assert key in keys, key


def test_init_and_drop_path_schedule():
    torch.manual_seed(0)
    model = create_model("medmamba_tiny", drop_path_rate=0.3)
    rates = [b.drop_path.p for layer in model.layers for b in layer.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 5))
    w = model.layers[2].downsample.reduction.weight  # trunc-normal(0.02)
    assert abs(w.std().item() - 0.02) < 0.002 and w.abs().max() <= 2.0
    conv = model.layers[2].blocks[0].conv33conv33conv11[1].weight  # kaiming normal, fan_out, relu
    assert abs(conv.std().item() / math.sqrt(2 / (48 * 9)) - 1) < 0.1
    assert model.no_weight_decay() >= {"layers.0.blocks.0.self_attention.A_logs"}


def test_eval_is_deterministic_and_per_sample():
    torch.manual_seed(0)
    model = create_model("medmamba_nano", num_classes=3).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=1e-4, atol=1e-5)


@pytest.fixture
def one_thread():
    # Tiny tensors gain nothing from 2 intra-op threads, and on a loaded 2-core machine every
    # OpenMP barrier waits for a descheduled thread: measured 16x slower per step than 1 thread.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_small_model_overfits_32_images(one_thread):
    torch.manual_seed(0)
    x = torch.randn(32, 1, 16, 16)
    y = torch.arange(32) % 2  # labels unrelated to the noise: the model has to memorise
    model = create_model("medmamba_nano", num_classes=2, in_chans=1, drop_path_rate=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first = None
    for _ in range(24):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert loss.item() < 0.1 * first and accuracy == 1.0


def test_is_a_module_with_the_family_type():
    assert isinstance(create_model("medmamba_nano"), MedMamba)
