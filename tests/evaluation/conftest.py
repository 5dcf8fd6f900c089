import pytest
import torch


def random_predictions(n: int = 300, k: int = 4, seed: int = 0, dtype=torch.float32):
    """An overconfident model: labels drawn from softmax(logits / 2), probabilities softmax(logits)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * torch.rand(n, 1, generator=g) * 6
    probs = torch.softmax(logits, -1).to(dtype)
    labels = torch.multinomial(torch.softmax(logits / 2, -1), 1, generator=g).squeeze(1)
    return probs, labels


@pytest.fixture
def predictions():
    return random_predictions()
