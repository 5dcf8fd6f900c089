import pytest


@pytest.fixture(scope="session")
def offline_sources():
    """Skip (naming the install command) unless MNIST, Fashion-MNIST and Animal-MNIST are all installed."""
    from clearmamba.experiments.sources import MissingSourceError, require

    for name in ("mnist", "fashion", "animal"):
        try:
            require(name)
        except MissingSourceError as error:
            pytest.skip(f"offline source not installed: {error}")
