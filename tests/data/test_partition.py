"""Site partitions through the flwr-datasets partitioners."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medsynth_fl.data import partition_sites, read_embedded
from medsynth_fl.data.errors import DataError
from medsynth_fl.data.imageset import ImageSet

PACKAGE = Path(__file__).resolve().parents[2] / "medsynth_fl"


@pytest.fixture(scope="module")
def embedded() -> ImageSet:
    return read_embedded(image_size=16)


def _all_ids(sites: dict[str, ImageSet]) -> list[str]:
    return sorted(i for s in sites.values() for i in s.meta["image_ids"].tolist())


def test_natural_is_one_site_per_centre(embedded):
    sites = partition_sites(embedded, "natural", num_sites=2, alpha=0.5, seed=0)
    assert set(sites) == set(embedded.meta["center"].tolist())
    for name, site in sites.items():
        assert set(site.meta["center"].tolist()) == {name}
    assert _all_ids(sites) == sorted(embedded.meta["image_ids"].tolist())


def test_dirichlet_sizes_add_up_and_are_seeded(embedded):
    sites = partition_sites(embedded, "dirichlet", num_sites=5, alpha=0.3, seed=0)
    assert list(sites) == [f"site_{i}" for i in range(5)]
    assert _all_ids(sites) == sorted(embedded.meta["image_ids"].tolist())
    assert min(len(s) for s in sites.values()) >= 10
    again = partition_sites(embedded, "dirichlet", num_sites=5, alpha=0.3, seed=0)
    assert [len(s) for s in sites.values()] == [len(s) for s in again.values()]
    # label mixes differ between sites (non-IID)
    shares = np.array([s.class_counts() / len(s) for s in sites.values()])
    assert shares.std(axis=0).max() > 0.05


def test_iid_equal_sizes_and_shuffled(embedded):
    sites = partition_sites(embedded, "iid", num_sites=3, alpha=0.5, seed=0)
    sizes = [len(s) for s in sites.values()]
    assert sum(sizes) == len(embedded) and max(sizes) - min(sizes) <= 1
    assert _all_ids(sites) == sorted(embedded.meta["image_ids"].tolist())
    first = sites["site_0"].meta["center"]
    assert len(set(first.tolist())) == len(set(embedded.meta["center"].tolist()))


def test_natural_needs_centres(embedded):
    no_centre = ImageSet(
        embedded.images[:4],
        embedded.labels[:4],
        embedded.class_names,
        {"center": np.array(["A", "", "B", ""])},
    )
    with pytest.raises(DataError, match="2 have none"):
        partition_sites(no_centre, "natural", 2, 0.5, 0)


@pytest.mark.filterwarnings("ignore:The specified min_partition_size")
def test_impossible_dirichlet_is_a_data_error(embedded):
    tiny = embedded.subset(np.arange(30))
    with pytest.raises(DataError, match="partition=dirichlet"):
        partition_sites(tiny, "dirichlet", 10, 0.05, 0, min_site_size=10)


def test_no_flwr_import_and_heavy_imports_are_lazy():
    sources = [p.read_text() for p in (PACKAGE / "data").glob("*.py")]
    assert not any("import flwr\n" in s or "from flwr " in s for s in sources)
    code = (
        "import sys, medsynth_fl.data\n"
        "heavy = [m for m in ('flwr', 'flwr_datasets', 'sklearn', 'datasets')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)
