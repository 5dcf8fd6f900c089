import pytest
import torch
import torch.nn.functional as F

from clearmamba.uncertainty import CALClassifier, CALLoss, CALOutput, CounterfactualAttention, Prediction
from clearmamba.uncertainty.cal import bilinear_attention_pool
from tests.uncertainty.toy import TinyConvNet


def _reference_pool(features, attention):
    # loop version of BAP: f[b, m, c] = mean_s A[b, m, s] F[b, c, s], signed sqrt, L2 over (m, c)
    b, c = features.shape[:2]
    m = attention.shape[1]
    out = torch.zeros(b, m * c, dtype=features.dtype)
    for i in range(b):
        for j in range(m):
            for k in range(c):
                value = (attention[i, j] * features[i, k]).mean()
                out[i, j * c + k] = torch.sign(value) * torch.sqrt(value.abs() + 1e-6)
    return out / out.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("shape", [(2, 6, 5, 4), (2, 6, 3, 4, 4)], ids=["2d", "3d"])
def test_cal_shapes_pooling_and_loss(shape):
    torch.manual_seed(0)
    dims = len(shape) - 2
    head = CounterfactualAttention(in_channels=6, num_classes=3, num_attentions=4, spatial_dims=dims)
    features = torch.randn(shape)
    output = head.train()(features)
    assert output.logits.shape == (2, 3) and output.effect_logits.shape == (2, 3)
    assert output.embedding.shape == (2, 4 * 6)
    assert output.attention.shape == (2, 4, *shape[2:])
    torch.testing.assert_close(output.embedding.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(output.embedding, _reference_pool(features, output.attention), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(output.logits, head.fc(100 * output.embedding))

    target = torch.tensor([0, 2])
    loss = CALLoss()(output, target)
    expected = F.cross_entropy(output.logits, target) / 3 + F.cross_entropy(output.effect_logits, target)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(
        CALLoss(raw_weight=1.0, effect_weight=0.0)(output, target), F.cross_entropy(output.logits, target)
    )
    loss.backward()
    assert head.attention[0].weight.grad.abs().sum() > 0

    # training: the counterfactual attention is random, so effect logits change between calls
    again = head(features)
    torch.testing.assert_close(again.logits, output.logits)
    assert not torch.allclose(again.effect_logits, output.effect_logits)

    # test time: counterfactual attention is all ones -> every map pools the plain spatial mean of F
    head.eval()
    output = head(features)
    ones = torch.ones_like(output.attention)
    torch.testing.assert_close(head(features).effect_logits, output.effect_logits)
    counterfactual = head.fc(100 * _reference_pool(features, ones))
    torch.testing.assert_close(output.effect_logits, output.logits - counterfactual, atol=1e-4, rtol=1e-4)


def test_cal_classifier_on_a_backbone_feature_map():
    model = CALClassifier(TinyConvNet(), num_classes=3, num_attentions=4)
    x = torch.randn(3, 1, 8, 8)
    assert isinstance(model.train()(x), CALOutput)
    prediction = model.eval()(x)
    assert isinstance(prediction, Prediction) and prediction.probs.shape == (3, 3)
    with pytest.raises(ValueError, match="spatial_dims=3"):
        CounterfactualAttention(6, 3, spatial_dims=3)(torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match="forward_features"):
        CALClassifier(torch.nn.Linear(3, 3), num_classes=3)


def test_pool_matches_reference_for_random_nonnegative_attention():
    features, attention = torch.randn(2, 3, 4, 4), torch.rand(2, 5, 4, 4)
    torch.testing.assert_close(bilinear_attention_pool(features, attention), _reference_pool(features, attention))
