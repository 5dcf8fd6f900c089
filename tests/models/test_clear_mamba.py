import pytest
import torch
import torch.nn.functional as F

import clearmamba.models.baselines  # noqa: F401  (registers the clear_* models)
from clearmamba.models import create_model
from clearmamba.models.temporal import TemporalMamba, masked_max, masked_mean
from clearmamba.uncertainty import Prediction

SIZE = 32


def tiny(**kw):
    torch.manual_seed(0)
    return create_model("clear_mamba_tiny", num_classes=3, in_chans=1, **kw).eval()


def exam_batch(lengths, t_max, seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    frames = torch.rand(b, t_max, 1, SIZE, SIZE, generator=g)
    times = torch.cumsum(torch.rand(b, t_max, generator=g) * 20 + 1, dim=1)
    mask = torch.arange(t_max).expand(b, t_max) < torch.tensor(lengths)[:, None]
    return frames, times, mask


@pytest.mark.parametrize(
    "temporal, head", [("mamba", "evidential"), ("mean", "softmax"), ("max", "evidential"), ("last", "softmax")]
)
def test_padded_exam_predicts_exactly_like_the_unpadded_exam(temporal, head):
    model = tiny(temporal=temporal, head=head)
    frames, times, mask = exam_batch([3, 5], t_max=7)
    # garbage in the padded frames and times must not matter
    frames[~mask] = 100.0
    times[~mask] = 1e4
    with torch.no_grad():
        batched = model(frames, times, mask)
        alone = [model(frames[i : i + 1, :n], times[i : i + 1, :n]) for i, n in enumerate([3, 5])]
    assert isinstance(batched, Prediction)
    torch.testing.assert_close(batched.probs, torch.cat([p.probs for p in alone]), rtol=1e-5, atol=1e-6)
    if head == "evidential":
        torch.testing.assert_close(batched.evidence, torch.cat([p.evidence for p in alone]), rtol=1e-5, atol=1e-5)


def test_padding_in_the_middle_of_an_exam_is_skipped_by_the_temporal_mamba():
    model = tiny(temporal="mamba")
    frames, times, _ = exam_batch([4], t_max=4)
    holey = torch.cat([frames[:, :2], torch.rand(1, 2, 1, SIZE, SIZE), frames[:, 2:]], dim=1)
    holey_times = torch.cat([times[:, :2], torch.zeros(1, 2), times[:, 2:]], dim=1)
    holey_mask = torch.tensor([[True, True, False, False, True, True]])
    with torch.no_grad():
        torch.testing.assert_close(model(holey, holey_times, holey_mask).probs, model(frames, times).probs)


def reference_temporal_exam(block: TemporalMamba, tokens, times):
    """A second implementation for one exam of real frames only: the conv and the Mamba recurrence as loops."""
    x = tokens + block.time_embedding(times)  # t d
    u, z = block.in_proj(block.norm(x)).chunk(2, -1)
    weight, k = block.conv1d.weight[:, 0], block.conv1d.weight.shape[-1]  # e k
    # frame i reads frames i - k + 1 .. i (zeros before the first)
    u = torch.stack([block.conv1d.bias + sum(weight[:, j] * u[i - k + 1 + j] for j in range(k) if i - k + 1 + j >= 0)
                     for i in range(len(u))])  # fmt: skip
    u = F.silu(u)
    dt, B, C = block.x_proj(u).split([block.dt_rank, block.d_state, block.d_state], -1)
    delta = F.softplus(block.dt_proj(dt))
    A = -torch.exp(block.A_log)  # e n
    state = torch.zeros(u.shape[1], block.d_state)
    ys = []
    for i in range(len(u)):
        state = torch.exp(delta[i, :, None] * A) * state + delta[i, :, None] * B[i, None, :] * u[i, :, None]
        ys.append(((state * C[i, None, :]).sum(-1) + block.D * u[i]) * F.silu(z[i]))
    return x + block.out_proj(torch.stack(ys))


def test_temporal_mamba_matches_a_loop_over_the_real_frames_of_each_exam():
    torch.manual_seed(4)
    block = TemporalMamba(16, d_state=4)
    with torch.no_grad():  # a non-zero conv bias and wider steps, so that every term of the reference matters
        block.conv1d.bias.normal_()
        block.dt_proj.bias.add_(2.0)
    tokens = torch.randn(3, 6, 16)
    times = torch.rand(3, 6) * 300
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        want = torch.stack([block.out_norm(reference_temporal_exam(block, tokens[i, m], times[i, m]).mean(0))
                            for i, m in enumerate(mask)])  # fmt: skip
        torch.testing.assert_close(block(tokens, times, mask), want, rtol=1e-5, atol=1e-5)


def test_masked_pooling_against_python_lists():
    x = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    torch.testing.assert_close(masked_mean(x, mask), torch.stack([x[0, :2].mean(0), x[1, 1:].mean(0)]))
    torch.testing.assert_close(masked_max(x, mask), torch.stack([x[0, :2].amax(0), x[1, 1:].amax(0)]))


def test_frame_times_and_order_matter_only_to_the_temporal_mamba():
    frames, times, _ = exam_batch([4], t_max=4)
    mamba, mean = tiny(temporal="mamba"), tiny(temporal="mean")
    with torch.no_grad():
        assert not torch.allclose(mamba(frames, times).probs, mamba(frames, times * 3).probs)
        assert not torch.allclose(mamba(frames, times).probs, mamba(frames.flip(1), times).probs)
        torch.testing.assert_close(mean(frames, times).probs, mean(frames.flip(1), times * 3).probs)


def test_single_frame_model_reads_only_the_last_real_frame():
    model = tiny(temporal="last")
    frames, times, mask = exam_batch([2, 3], t_max=3)
    changed = frames.clone()
    changed[:, 0] = torch.rand_like(changed[:, 0])
    with torch.no_grad():
        torch.testing.assert_close(model(frames, times, mask).probs, model(changed, times, mask).probs)
        torch.testing.assert_close(model(frames, times, mask).probs[:1], model(frames[:1, 1]).probs)


def test_image_batches_are_one_frame_exams():
    model = tiny(temporal="mamba")
    images = torch.rand(2, 1, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(model(images).probs, model(images[:, None], torch.zeros(2, 1)).probs)


def test_model_trains_and_exposes_every_score():
    torch.manual_seed(5)
    model = create_model("clear_mamba_tiny", num_classes=3, in_chans=1)
    frames, times, mask = exam_batch([2, 2], t_max=2)
    prediction = model(frames, times, mask)
    assert {"vacuity", "entropy", "mutual_info", "msp"} <= set(prediction.scores())
    prediction.probs[:, 0].sum().backward()
    assert model.temporal.A_log.grad is not None and model.encoder.last_hac.to_film.weight.grad.abs().sum() > 0


def test_bad_inputs_are_named():
    model = tiny()
    with pytest.raises(ValueError, match="frames"):
        model(torch.rand(2, SIZE, SIZE))
    with pytest.raises(ValueError, match="no real frame"):
        model(torch.rand(1, 2, 1, SIZE, SIZE), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown option"):
        create_model("clear_mamba_tiny", num_classes=2, in_chans=1, colour="red")
    with pytest.raises(ValueError, match="head"):
        create_model("clear_mamba_tiny", num_classes=2, in_chans=1, head="bayes")


def test_monai_baseline_behind_the_same_head():
    torch.manual_seed(6)
    model = create_model("clear_resnet18", num_classes=3, in_chans=1, temporal="mean", hac=True).eval()
    frames, times, mask = exam_batch([1, 2], t_max=2)
    with torch.no_grad():
        prediction = model(frames, times, mask)
    assert prediction.evidence is not None and prediction.probs.shape == (2, 3)
    torch.testing.assert_close(prediction.probs.sum(-1), torch.ones(2))


def test_backbone_options_override_the_size_one_by_one():
    model = create_model("clear_mamba_tiny", num_classes=3, backbone_kwargs={"d_state": 4})
    backbone = model.encoder.backbone
    assert backbone.cfg.stem == "conv" and backbone.cfg.d_state == 4
    assert model.cfg.backbone_kwargs == {"stem": "conv", "d_state": 4}
    plain = create_model("clear_mamba_tiny", num_classes=3, backbone_kwargs={"stem": "patch"})
    assert plain.encoder.backbone.cfg.stem == "patch"


def test_whole_models_vectorise_into_an_ensemble():
    import warnings

    from clearmamba.uncertainty.ensemble import DeepEnsemble

    members = [tiny(head="softmax", temporal="mamba") for _ in range(2)]
    with torch.no_grad():
        members[1].head.fc.weight.mul_(-1.0)  # distinct members, so averaging is visible
    ensemble = DeepEnsemble(members).eval()
    frames, _, _ = exam_batch([3, 3], t_max=3)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # a vmap fallback or a missing batching rule would warn
        vectorised = ensemble.forward_vectorized(frames)
        looped = ensemble.forward_loop(frames)
    torch.testing.assert_close(vectorised.probs, looped.probs, rtol=1e-5, atol=1e-6)
