import pytest

from medsynth_fl.config import load_config
from simulation.prepare import prepare_simulation

TINY_FED = ["data.empty_class=skip", "federation.min_sites=2"]


@pytest.fixture(scope="session")
def tiny_federation(tmp_path_factory):
    """Four tiny sites (the embedded centres) prepared once for the session."""
    root = tmp_path_factory.mktemp("federation")
    cfg = load_config("tiny", TINY_FED)
    layout = prepare_simulation(cfg, root)
    return layout


@pytest.fixture
def run_config(tiny_federation, tmp_path):
    """Run config for the apps: the tiny preset, sites, keys, a fresh store."""
    return tiny_federation.run_config(
        "tiny",
        overrides="data.empty-class=skip; federation.min-sites=2",
        **{
            "store-dir": str(tmp_path / "store"),
            "run-id": "test-run",
        },
    )
