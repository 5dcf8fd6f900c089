import pytest


@pytest.fixture(scope="session")
def offline_sources():
    """Skip (naming the install command) unless MNIST, Fashion-MNIST and Animal-MNIST are all installed."""
    from clearmamba.data import mnist_sources as ms

    for check in (ms.mnist_path, lambda: ms.load_fashion_mnist("test"), ms.load_animal_mnist):
        try:
            check()
        except ms.MissingSourceError as error:
            pytest.skip(f"offline source not installed: {error}")
