"""A site re-uses its package across coordinator-only changes, not across site ones."""

from __future__ import annotations

import pytest
import torch

from medsynth_fl.config import load_config
from medsynth_fl.models.registry import build_generator
from medsynth_fl.package import create_package, generate_site_key, write_package
from medsynth_fl.package.manifest import TrainingSummary
from medsynth_fl.training.condense import PACKAGE_NAME
from site_client.plan import SiteSetup, cached_package, run_folder

NAMES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]


@pytest.fixture
def site_with_package(tmp_path):
    """A site folder holding a package made under the tiny preset."""
    cfg = load_config("tiny")
    site = SiteSetup("site-a", "embedded", tmp_path / "a.pem", tmp_path / "work")
    key = generate_site_key(site.key_path, tmp_path / "a.pub")
    kwargs = dict(num_classes=len(NAMES), image_size=16, ngf=4, z_dim=8)
    torch.manual_seed(0)
    summary = TrainingSummary(
        stage="phase1",
        phase1_steps=1,
        phase2_steps=0,
        teacher_steps=0,
        n_images=1,
        seconds={},
        config_digest=cfg.site_digest(),
    )
    pkg = create_package(
        build_generator("cbn_resnet", kwargs),
        "cbn_resnet",
        kwargs,
        site_id=site.site_id,
        class_names=NAMES,
        classes_present=NAMES,
        training=summary,
        key=key,
    )
    write_package(pkg, run_folder(site, cfg) / PACKAGE_NAME)
    return site, cfg


@pytest.mark.parametrize(
    "override",
    [
        "classifier.steps=7",
        "federation.ipc=9",
        "audit.n_generated=65",
        "contributions.n_bootstrap=3",
        "sampling.seed=5",
    ],
)
def test_a_coordinator_only_change_reuses_the_sites_package(
    site_with_package, override
):
    site, cfg = site_with_package
    changed = load_config("tiny", [override])
    assert changed.digest() != cfg.digest()  # the run's provenance does change
    assert run_folder(site, changed) == run_folder(site, cfg)
    assert cached_package(run_folder(site, changed), changed) is not None


@pytest.mark.parametrize(
    "override",
    ["phase1.lr=0.0003", "generator.ngf=8", "training.seed=3", "data.split_seed=2"],
)
def test_a_change_to_what_makes_the_generator_condenses_again(
    site_with_package, override
):
    site, cfg = site_with_package
    changed = load_config("tiny", [override])
    assert run_folder(site, changed) != run_folder(site, cfg)
    # even a package found in the old folder is not taken for the new config
    assert cached_package(run_folder(site, cfg), changed) is None
