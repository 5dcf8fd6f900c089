import pytest
import torch
from torch import nn

from clearmamba.uncertainty import MCDropout, add_head_dropout
from tests.uncertainty.toy import FunctionalDropoutNet, TinyConvNet


def _same_seed_samples(model, x, mode, **kw):
    torch.manual_seed(123)
    return MCDropout(model, num_samples=12, mode=mode, **kw).eval()(x)


class TrunkHead(nn.Module):
    """Dropout only inside ``self.head``, found by the hook-based search (no Sequential, no forward_head)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.4), nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.trunk(x) * 2.0)


@pytest.mark.parametrize(
    "build, x, kw",
    [
        (
            lambda: nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3)),
            torch.randn(5, 6),
            {},
        ),
        (lambda: TinyConvNet(dropout=0.5), torch.randn(5, 1, 8, 8), {}),
        (TrunkHead, torch.randn(5, 6), {}),
        (TrunkHead, torch.randn(5, 6), {"head": "head"}),
    ],
)
def test_head_only_equals_full_mode_when_dropout_is_only_in_the_head(build, x, kw):
    torch.manual_seed(0)
    model = build().eval()
    full = _same_seed_samples(model, x, "full")
    head = _same_seed_samples(model, x, "head", batched=False, **kw)
    # same seed, deterministic trunk -> the looped head draws identical masks in the same order
    assert full.members.shape == (12, 5, 3)
    torch.testing.assert_close(head.members, full.members, rtol=0, atol=1e-6)
    for name in ("entropy", "expected_entropy", "mutual_info"):
        torch.testing.assert_close(head.score(name), full.score(name), rtol=0, atol=1e-6)
    # and the samples really are stochastic
    assert full.members.std(0).max() > 1e-3


def test_batched_head_samples_have_the_closed_form_dropout_variance():
    # 2 classes, head = Linear(dropout(f)): log(p1 / p0) = w . (m * f) / (1 - p) + c with Bernoulli(1 - p) masks m,
    # so over samples its mean is w . f + c and its variance is p / (1 - p) * sum_j (w_j f_j)^2, per row
    torch.manual_seed(0)
    p, t = 0.3, 4000
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Dropout(p), nn.Linear(6, 2)).eval()
    x = torch.randn(3, 4)
    batched = MCDropout(model, num_samples=t, mode="head").eval()(x)
    looped = MCDropout(model, num_samples=t, mode="head", batched=False).eval()(x)
    features = model[:2](x)
    w = model[3].weight[1] - model[3].weight[0]
    with torch.no_grad():
        expected_mean = model(x)[:, 1] - model(x)[:, 0]
        expected_var = p / (1 - p) * ((w * features) ** 2).sum(-1)
    for samples in (batched, looped):
        log_odds = (samples.members[..., 1] / samples.members[..., 0]).log()  # [t, b]
        stderr = (expected_var / t).sqrt()
        assert ((log_odds.mean(0) - expected_mean).abs() < 5 * stderr).all()
        torch.testing.assert_close(log_odds.var(0), expected_var, rtol=0.1, atol=1e-6)
    # rows are masked independently: two copies of one input do not get the same samples
    twin = MCDropout(model, num_samples=8, mode="head").eval()(x[:1].repeat(2, 1)).members
    assert (twin[:, 0] - twin[:, 1]).abs().max() > 1e-3


def test_functional_dropout_is_sampled():
    torch.manual_seed(0)
    model = FunctionalDropoutNet(p=0.5).eval()
    x = torch.randn(4, 6)
    torch.testing.assert_close(model(x), model(x))  # plain eval: F.dropout is off
    prediction = MCDropout(model, num_samples=64).eval()(x)
    assert prediction.members.std(0).max() > 1e-3
    # the samples are those of the model in train mode (dropout on): same mean within MC error
    torch.manual_seed(1)
    # dropout is elementwise, so 4000 copies of the batch in one train-mode pass are 4000 samples
    reference = model.train()(x.repeat(4000, 1)).softmax(-1).view(4000, *x.shape[:1], -1).mean(0)
    torch.testing.assert_close(prediction.probs, reference, atol=0.06, rtol=0)
    # a module-only wrapper would have missed it: refuse rather than return identical samples
    with pytest.raises(ValueError, match="no dropout module"):
        MCDropout(model.eval(), functional=False)


def test_functional_dropout_fraction_matches_p():
    class Probe(nn.Module):
        def forward(self, x):
            kept = (torch.nn.functional.dropout(x, 0.3, self.training) != 0).float().mean(-1, keepdim=True)
            return torch.cat([kept, 1 - kept], -1).log()

    prediction = MCDropout(Probe(), num_samples=50).eval()(torch.ones(2, 2000))
    kept = prediction.members[..., 0]
    assert abs(float(kept.mean()) - 0.7) < 0.01


def test_model_without_dropout_and_dropout_in_trunk_are_refused():
    x = torch.randn(3, 6)
    with pytest.raises(ValueError, match="without any dropout"):
        MCDropout(nn.Linear(6, 3)).eval()(x)
    trunk_dropout = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    # the Sequential head starts at the first dropout, so this one is fine...
    assert MCDropout(trunk_dropout, mode="head").eval()(x).members.shape == (16, 3, 3)

    class DropoutBeforeHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(6, 8)
            self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(8, 3))

        def forward(self, x):
            return self.head(torch.nn.functional.dropout(self.body(x), 0.5, self.training))

    # ...but functional dropout ahead of the named head makes the trunk random
    with pytest.raises(ValueError, match="before the head"):
        MCDropout(DropoutBeforeHead(), mode="head", head="head").eval()(x)


def test_add_head_dropout_and_transparent_training_mode():
    model = add_head_dropout(TinyConvNet(), p=0.3)
    assert isinstance(model.fc[0], nn.Dropout) and model.fc[0].p == 0.3
    wrapper = MCDropout(model, num_samples=4)
    x = torch.randn(2, 1, 8, 8)
    assert isinstance(wrapper.train()(x), torch.Tensor)  # training: the model's own output
    prediction = wrapper.eval()(x)
    assert prediction.members.shape == (4, 2, 3)
    assert not model.fc[0].training  # dropout modules are restored to eval after sampling
