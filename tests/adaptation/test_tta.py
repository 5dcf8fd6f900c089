"""Test-time adaptation: it sees no labels, leaves the model alone unless asked, and does what it says."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import clearmamba.models.baselines  # noqa: F401  (registers the clear_* models)
from clearmamba.adaptation import (
    AdaptationConfig,
    UnlabelledExams,
    adapt,
    mean_entropy,
    norm_affine_parameters,
    reestimate_norm_statistics,
)
from clearmamba.data.angiography import SimulatorConfig
from clearmamba.data.builtin import simulate_camera_exams
from clearmamba.data.camera_family import HELDOUT_CAMERAS
from clearmamba.models import create_model

CFG = SimulatorConfig(size=32, frames=3, classes=("normal", "leakage", "staining"))


@pytest.fixture(scope="module")
def exams():
    return simulate_camera_exams(10, HELDOUT_CAMERAS[0], CFG, seed=3)


def tiny():
    torch.manual_seed(0)
    return create_model("clear_mamba_tiny", num_classes=3, in_chans=1, temporal="mean").eval()


def same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_reestimated_statistics_are_those_of_the_new_exams(exams):
    model = tiny()
    stem_conv, stem_bn = model.encoder.backbone.stem[0], model.encoder.backbone.stem[1]
    source_mean = stem_bn.running_mean.clone()
    data = UnlabelledExams.from_examset(exams)
    layers = reestimate_norm_statistics(model, data, batch_size=len(data))  # one batch: exact statistics
    with torch.no_grad():
        inputs = stem_conv(exams.frames[exams.mask])  # the layer's inputs: real frames only
    torch.testing.assert_close(stem_bn.running_mean, inputs.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stem_bn.running_var, inputs.var(dim=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    assert layers == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) and not model.training
    # with a prior: mu = prior mu_source + (1 - prior) mu_target
    mixed = tiny()
    reestimate_norm_statistics(mixed, data, prior=0.25, batch_size=len(data))
    bn = mixed.encoder.backbone.stem[1]
    torch.testing.assert_close(bn.running_mean, 0.25 * source_mean + 0.75 * inputs.mean(dim=(0, 2, 3)),
                               rtol=1e-4, atol=1e-6)  # fmt: skip


def test_adaptation_leaves_the_model_alone_unless_asked(exams):
    model, untouched = tiny(), tiny()
    data = UnlabelledExams.from_examset(exams)
    config = AdaptationConfig(entropy_steps=1, batch_size=5)
    result = adapt(model, data, config)
    assert result.model is not model and same_state(model, untouched)
    assert not same_state(result.model, untouched) and result.batchnorm_layers > 0 and result.adapted_parameters > 0
    in_place = adapt(model, data, config, inplace=True)
    assert in_place.model is model and same_state(model, result.model)


def test_adaptation_never_sees_labels(exams):
    assert {f.name for f in fields(UnlabelledExams)} == {"frames", "frame_times", "mask"}
    relabelled = replace(exams, labels=(exams.labels + 1) % 3, true_labels=torch.zeros_like(exams.labels),
                         exam_id=[f"x{i}" for i in range(len(exams))])  # fmt: skip
    config = AdaptationConfig(entropy_steps=2, batch_size=4, norm_kinds=("batch", "layer"))
    a = adapt(tiny(), UnlabelledExams.from_examset(exams), config).model
    b = adapt(tiny(), UnlabelledExams.from_examset(relabelled), config).model
    assert same_state(a, b)  # whatever the labels, the same adapted model
    # an object that has no labels at all is enough, and an ExamSet itself is refused
    bare = SimpleNamespace(frames=exams.frames, frame_times=exams.frame_times, mask=exams.mask)
    assert same_state(adapt(tiny(), UnlabelledExams.from_examset(bare), config).model, a)
    with pytest.raises(TypeError, match="UnlabelledExams"):
        adapt(tiny(), exams, config)


def test_entropy_minimisation_trains_only_the_norm_affine_parameters_and_lowers_the_entropy(exams):
    model = tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    data = UnlabelledExams.from_examset(exams)
    config = AdaptationConfig(norm_statistics=False, entropy_steps=6, lr=1e-2, batch_size=len(data))
    result = adapt(model, data, config)
    norm_ids = {id(p) for p in norm_affine_parameters(result.model, ("batch",))}
    changed = {n for n, p in result.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(id(dict(result.model.named_parameters())[n]) in norm_ids for n in changed)
    assert all(p.requires_grad for p in result.model.parameters())  # flags restored
    assert result.entropy[-1] < result.entropy[0]  # the same batch each step, so the objective went down
    torch.testing.assert_close(torch.tensor(result.entropy[0]), mean_entropy(_batch_mode_probs(model, exams)),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    # deterministic given the config's seed
    again = adapt(model, data, config)
    assert same_state(again.model, result.model)


def _batch_mode_probs(model: nn.Module, exams) -> torch.Tensor:
    # the unadapted model with BatchNorm on batch statistics: what the first entropy step sees
    copy = create_model("clear_mamba_tiny", num_classes=3, in_chans=1, temporal="mean")
    copy.load_state_dict(model.state_dict())
    copy.eval()
    for m in copy.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    with torch.no_grad():
        return copy(exams.frames, exams.frame_times, exams.mask).probs


def test_the_scope_limits_reestimation_to_the_conv_stem(exams):
    model, untouched = tiny(), tiny()
    config = AdaptationConfig(statistics_scope="encoder.backbone.stem")
    result = adapt(model, UnlabelledExams.from_examset(exams), config)
    assert result.batchnorm_layers == 2  # conv stem of a 4x patch: two Conv-BN-ReLU-MaxPool blocks
    new, old = result.model.state_dict(), untouched.state_dict()
    moved = {k for k in new if not torch.equal(new[k], old[k])}
    assert moved and all(k.startswith("encoder.backbone.stem.") for k in moved)


def test_the_config_round_trips_and_names_bad_fields():
    config = AdaptationConfig(entropy_steps=2, norm_kinds=("batch", "layer"), statistics_prior=0.1)
    assert AdaptationConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="run.json.*'steps'"):
        AdaptationConfig.from_dict({"steps": 3}, where="run.json")
    with pytest.raises(ValueError, match="norm_kinds"):
        AdaptationConfig(norm_kinds=("instance",))
    with pytest.raises(ValueError, match="statistics_prior"):
        AdaptationConfig(statistics_prior=1.5)
    with pytest.raises(ValueError, match="mask"):
        UnlabelledExams(torch.zeros(2, 3, 1, 4, 4), torch.zeros(2, 3), torch.ones(2, 4, dtype=torch.bool))
