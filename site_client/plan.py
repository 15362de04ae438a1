"""Planning a site node's work, without Flower: which site, which folder, what to reuse.

The node config (deployment) or the run config (simulation) says which site
this node is and where its data and key are (:func:`site_from_node_config`);
the site config's digest names the work folder (:func:`run_folder`), so a
change to anything that shapes the generator condenses afresh while the
coordinator's settings never do; :func:`cached_package` reuses a package made
with this exact site config.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from medsynth_fl.config import Config
from medsynth_fl.data import data_overrides
from medsynth_fl.package import FORMAT_VERSION, GeneratorPackage, read_package
from medsynth_fl.training.condense import PACKAGE_NAME

log = logging.getLogger(__name__)


class SiteSetupError(ValueError):
    """The node's configuration does not describe a usable site."""


@dataclass(frozen=True)
class SiteSetup:
    """Facts about this hospital's node (from the Flower node config)."""

    site_id: str
    data_path: str
    key_path: Path
    work_dir: Path
    num_gpus: int = 0
    allow_baselines: bool = False  # opt-in: FedAvg sends a classifier off-site

    def config_overrides(self) -> list[str]:
        """Config overrides that point the data and package sections at this site.

        A site's data is its own: a consortium preset's centre filter (used to
        carve simulated sites) does not apply to it.
        """
        return [
            *data_overrides(self.data_path),
            "data.centers=null",
            f"package.site_id={json.dumps(self.site_id)}",
        ]


def site_from_node_config(node_config: dict, run_config: dict) -> SiteSetup:
    """Resolve the site from node config, or from a simulation's partition id.

    A deployed SuperNode sets ``site-id``, ``data-path`` and ``site-key`` (and
    optionally ``work-dir``, ``num-gpus``). In a one-machine simulation the node
    config holds only ``partition-id``; the site is then the partition-id-th
    folder of the run config's ``sim-sites-dir``.
    """
    if "data-path" in node_config:
        missing = [k for k in ("site-id", "site-key") if k not in node_config]
        if missing:
            raise SiteSetupError(f"node config has data-path but lacks {missing}")
        site_id = str(node_config["site-id"])
        return SiteSetup(
            site_id=site_id,
            data_path=str(node_config["data-path"]),
            key_path=Path(str(node_config["site-key"])),
            work_dir=Path(str(node_config.get("work-dir", f"runs/site-{site_id}"))),
            num_gpus=int(node_config.get("num-gpus", 0)),
            allow_baselines=bool(node_config.get("allow-baselines", False)),
        )
    if "partition-id" in node_config and "sim-sites-dir" in run_config:
        sites = sorted(
            p for p in Path(str(run_config["sim-sites-dir"])).iterdir() if p.is_dir()
        )
        index = int(node_config["partition-id"])
        if index >= len(sites):
            raise SiteSetupError(
                f"partition {index} has no site folder ({len(sites)} prepared)"
            )
        folder = sites[index]
        # A simulated site's own node settings (what a deployed node config says).
        node = (
            json.loads((folder / "node.json").read_text())
            if (folder / "node.json").is_file()
            else {}
        )
        return SiteSetup(
            folder.name,
            str(folder / "data.npz"),
            folder / "site.pem",
            folder / "work",
            allow_baselines=bool(node.get("allow-baselines", False)),
        )
    raise SiteSetupError(
        "cannot tell which site this node is: set node config data-path, site-id and "
        "site-key (deployment) or run config sim-sites-dir (simulation)"
    )


def run_folder(site: SiteSetup, cfg: Config) -> Path:
    """The site's folder for one config and package format.

    A new release whose generator differs (a new package format) condenses
    into a new folder instead of resuming an incompatible checkpoint.
    """
    return site.work_dir / f"f{FORMAT_VERSION}-{cfg.site_digest()}"


def cached_package(work_dir: Path, cfg: Config) -> GeneratorPackage | None:
    """The package already in ``work_dir`` if it was made with this site config."""
    path = work_dir / PACKAGE_NAME
    if not path.is_file():
        return None
    pkg = read_package(path, max_bytes=cfg.package.max_bytes)
    if pkg.manifest.training.config_digest != cfg.site_digest():
        log.info("existing package was made with another config: condensing again")
        return None
    return pkg
