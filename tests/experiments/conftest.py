import pytest


@pytest.fixture(scope="session")
def offline_sources() -> tuple[str, ...]:
    """The OOD sets the quick experiments can use here. MNIST and Animal-MNIST come with the locked install, so
    they must be present; Fashion-MNIST is a system package (`.ci/setup-system`) and joins when installed, so the
    experiments run either way."""
    from clearmamba.experiments.sources import is_installed, require

    require("mnist")
    require("animal")
    return ("fashion", "animal", "letters") if is_installed("fashion") else ("animal", "letters")
