import pytest
import torch

from clearmamba.uncertainty import METHODS, Prediction, as_prediction, create_method
from tests.uncertainty.toy import TinyConvNet, blobs

OPTIONS = {
    "mc_dropout": {"num_samples": 4},
    "ensemble": {"num_members": 2},
    "swag": {"num_samples": 3, "max_rank": 3},
    "variational": {"num_samples": 3},
    "heteroscedastic": {"num_samples": 8},
    "evidential": {"anneal_epochs": 2},
    "softmax": {},
    "cal": {"num_attentions": 4},
}


def _train(name, epochs=3):
    """The generic loop of the methods.py docstring, with no branch on the method."""
    images, labels = blobs(96)
    loader = [(images[i : i + 16], labels[i : i + 16]) for i in range(0, 96, 16)]
    method = create_method(name, **OPTIONS[name])
    trained = []
    for member in range(method.num_members):
        torch.manual_seed(member)
        model = method.prepare(TinyConvNet(), num_classes=3, dataset_size=96)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
        for epoch in range(epochs):
            model.train()
            for step, (x, y) in enumerate(loader):
                loss = method.loss(model(x), y, epoch=epoch + step / len(loader))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            method.on_epoch_end(model, epoch, epochs)
        trained.append(method.finalize(model, [x for x, _ in loader]))
    return method, method.combine(trained)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_and_predicts_through_one_protocol(name):
    method, model = _train(name)
    images, labels = blobs(60, seed=1)
    prediction = method.predict(model, images)
    assert isinstance(prediction, Prediction)
    torch.testing.assert_close(prediction.probs.sum(-1), torch.ones(60))
    accuracy = float((prediction.predicted == labels).float().mean())
    assert accuracy > 0.6, f"{name} did not learn an easy task: accuracy {accuracy:.2f}"
    expected_members = {"mc_dropout": 4, "ensemble": 2, "swag": 3, "variational": 3}
    if name in expected_members:
        assert prediction.members.shape == (expected_members[name], 60, 3)
        assert prediction.score("mutual_info").shape == (60,)
    if name == "evidential":
        assert prediction.score("vacuity").shape == (60,)
    if name == "heteroscedastic":
        assert prediction.score("aleatoric_variance").shape == (60,)
    # training outputs are readable as predictions too (for logging)
    assert as_prediction(model.train()(images[:4]) if name != "ensemble" else prediction).probs.shape[-1] == 3


def test_unknown_method_and_bad_options():
    with pytest.raises(ValueError, match="unknown uncertainty method"):
        create_method("laplace")
    with pytest.raises(ValueError, match="bad options"):
        create_method("swag", members=3)
    with pytest.raises(ValueError, match="dataset_size"):
        create_method("variational").prepare(TinyConvNet())


def test_the_public_code_loss_is_selectable_by_name():
    from clearmamba.uncertainty.edl_losses import PublicEvidentialLoss

    method = create_method("evidential", objective="public", kl_weight=5e-3, adaptive_kl=True)
    assert isinstance(method.criterion, PublicEvidentialLoss)
    assert method.criterion.adaptive and float(method.criterion.kl_coefficient) == pytest.approx(5e-3)
