import math

import pytest
import torch
from torch import nn

from clearmamba.uncertainty import DeepEnsemble, PredictionAdapter, train_members
from tests.uncertainty.toy import TinyConvNet


def _members(n=4, **kw):
    members = []
    for seed in range(n):
        torch.manual_seed(seed)
        model = TinyConvNet(**kw)
        # non-trivial BN statistics so eval-mode BN is exercised
        model.train()(torch.randn(16, 1, 8, 8) * (seed + 1))
        members.append(model.eval())
    return members


def test_vectorised_ensemble_equals_the_loop():
    ensemble = DeepEnsemble(_members()).eval()
    x = torch.randn(6, 1, 8, 8)
    vectorised = ensemble.forward_vectorized(x)
    loop = ensemble.forward_loop(x)
    assert vectorised.members.shape == (4, 6, 3)
    torch.testing.assert_close(vectorised.members, loop.members, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(vectorised.score("mutual_info"), loop.score("mutual_info"), atol=1e-6, rtol=1e-5)
    # the members themselves, one by one
    torch.testing.assert_close(loop.members[2], ensemble.members[2](x).softmax(-1))
    assert ensemble.vectorize


def test_vectorised_equals_loop_for_evidential_members_and_restacks_after_updates():
    members = [PredictionAdapter(m, "evidential") for m in _members(3)]
    ensemble = DeepEnsemble(members).eval()
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(ensemble.forward_vectorized(x).members, ensemble.forward_loop(x).members)
    with torch.no_grad():
        members[1].model.fc.weight.add_(1.0)  # in-place update, as an optimizer step would do
    torch.testing.assert_close(ensemble.forward_vectorized(x).members, ensemble.forward_loop(x).members)


def test_different_architectures_fall_back_to_the_loop():
    members = _members(1) + _members(1, width=4)
    ensemble = DeepEnsemble(members).eval()
    assert not ensemble.vectorize
    x = torch.randn(2, 1, 8, 8)
    expected = torch.stack([m(x).softmax(-1) for m in members])
    torch.testing.assert_close(ensemble(x).members, expected)


class Constant(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def test_two_opposite_confident_members_have_mutual_information_ln2():
    ensemble = DeepEnsemble([Constant([60.0, -60.0]), Constant([-60.0, 60.0])]).eval()
    prediction = ensemble(torch.zeros(3, 1))
    torch.testing.assert_close(prediction.score("mutual_info"), torch.full((3,), math.log(2)))
    torch.testing.assert_close(prediction.score("expected_entropy"), torch.zeros(3), atol=1e-6, rtol=0)


def test_train_members_is_seeded_and_resumable(tmp_path):
    calls = []

    def train_one(model, m):
        calls.append(m)
        with torch.no_grad():
            model.fc.bias.add_(m)

    first = train_members(lambda m: TinyConvNet(), train_one, 3, tmp_path, seed=10)
    assert calls == [0, 1, 2]
    assert not torch.equal(first[0].fc.weight, first[1].fc.weight)  # different seeds, different inits
    (tmp_path / "member_2.pt").unlink()  # as if the run stopped before member 2 was saved
    second = train_members(lambda m: TinyConvNet(), train_one, 3, tmp_path, seed=10)
    assert calls == [0, 1, 2, 2]  # only the missing member was trained again
    for a, b in zip(first, second):
        for key, value in a.state_dict().items():
            torch.testing.assert_close(b.state_dict()[key], value)
    (tmp_path / "member_0.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="member_0.pt"):
        train_members(lambda m: TinyConvNet(), train_one, 3, tmp_path)
