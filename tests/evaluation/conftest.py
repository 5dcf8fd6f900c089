import pytest
import torch


def random_predictions(n: int = 300, k: int = 4, seed: int = 0, dtype=torch.float32):
    """Softmax probabilities with a mix of confident and unsure rows, labels agreeing ~60 % of the time."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * torch.rand(n, 1, generator=g) * 4
    probs = torch.softmax(logits, -1).to(dtype)
    labels = torch.where(
        torch.rand(n, generator=g) < 0.6, probs.argmax(-1), torch.randint(0, k, (n,), generator=g)
    )
    return probs, labels


@pytest.fixture
def predictions():
    return random_predictions()
