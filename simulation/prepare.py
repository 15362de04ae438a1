"""Lay out a simulated consortium on one machine.

Site folders with data and keys, the coordinator's registered keys and held-out
test set.

::

    <root>/sites/<site>/data.npz      the site's images (train and test folds)
    <root>/sites/<site>/site.pem      the site's private signing key
    <root>/coordinator/site_keys/<site>.pub
    <root>/coordinator/test.npz       pooled test folds (the coordinator's held-out set)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from medsynth_fl.config import Config
from medsynth_fl.data import load_images, partition_sites, split_train_test
from medsynth_fl.data.imageset import ImageSet
from medsynth_fl.package import generate_site_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SimulationLayout:
    """Paths of a prepared simulation."""

    root: Path
    sites: list[str]

    @property
    def sites_dir(self) -> Path:
        """Folder of the site folders (the ClientApp's ``sim-sites-dir``)."""
        return self.root / "sites"

    @property
    def keys_dir(self) -> Path:
        """The coordinator's registered site public keys."""
        return self.root / "coordinator" / "site_keys"

    @property
    def test_set(self) -> Path:
        """The coordinator's held-out real test set."""
        return self.root / "coordinator" / "test.npz"

    def run_config(self, preset: str, **extra: object) -> dict:
        """Flat run config for the apps (Flower run config holds scalars only)."""
        return {
            "preset": preset,
            "sim-sites-dir": str(self.sites_dir.resolve()),
            "site-keys-dir": str(self.keys_dir.resolve()),
            "test-set": str(self.test_set.resolve()),
            "store-dir": str((self.root / "coordinator" / "store").resolve()),
            **extra,
        }


def _site_test(images: ImageSet, cfg: Config) -> ImageSet:
    return split_train_test(
        images, cfg.data.split, cfg.data.test_fraction, cfg.data.split_seed
    )[1]


def prepare_simulation(
    cfg: Config, root: Path, min_site_size: int = 10
) -> SimulationLayout:
    """Partition the configured data into sites and write their folders and keys.

    Reuses an existing layout (same site folders) so that keys and caches survive.
    """
    fed = cfg.federation
    images = load_images(cfg.data)
    parts = partition_sites(
        images,
        fed.partition,
        fed.num_sites,
        fed.alpha,
        cfg.data.split_seed,
        min_site_size,
    )
    if fed.sites is not None:
        unknown = sorted(set(fed.sites) - set(parts))
        if unknown:
            raise ValueError(
                f"federation.sites names {unknown}; the partition has {sorted(parts)}"
            )
        parts = {k: v for k, v in parts.items() if k in fed.sites}
    keys_dir = root / "coordinator" / "site_keys"
    keys_dir.mkdir(parents=True, exist_ok=True)
    tests = []
    for site, data in sorted(parts.items()):
        folder = root / "sites" / site
        folder.mkdir(parents=True, exist_ok=True)
        data.save_npz(folder / "data.npz")
        if not (folder / "site.pem").is_file():
            generate_site_key(folder / "site.pem", keys_dir / f"{site}.pub")
        tests.append(_site_test(data, cfg))
        log.info("site %s: %d images", site, len(data))
    ImageSet.concat(tests).save_npz(root / "coordinator" / "test.npz")
    return SimulationLayout(root, sorted(parts))
