"""Shared fixtures: offline hub, project-local caches, tiny configs and site keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub call would retry for ~48 s
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


@pytest.fixture
def tiny_cfg(tmp_path):
    """The tiny preset with its image cache in the test's temporary folder."""
    from medsynth_fl.config import load_config

    return load_config("tiny", [f"data.cache_dir={tmp_path / 'cache'}"])


@pytest.fixture(scope="session")
def tiny_data():
    """Train/test split of the embedded data at the tiny preset's 16 px."""
    from medsynth_fl.config import load_config
    from medsynth_fl.data import load_train_test

    return load_train_test(load_config("tiny").data)


@pytest.fixture
def site_key(tmp_path):
    """A fresh Ed25519 site key (private key object) and its public-key path."""
    from medsynth_fl.package import generate_site_key

    key = generate_site_key(
        tmp_path / "keys" / "site.pem", tmp_path / "keys" / "site.pub"
    )
    return key, tmp_path / "keys" / "site.pub"
