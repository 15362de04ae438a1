"""The embedded default subset and its deterministic builder."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth_fl.config import ISIC_CLASSES
from medsynth_fl.data import EMBEDDED_PATH, read_embedded
from medsynth_fl.data.embedded import build_embedded_subset, select_subset
from medsynth_fl.data.errors import ImageSizeError

from .data_fakes import build_shards


def test_embedded_subset_is_real_and_complete():
    assert EMBEDDED_PATH.stat().st_size <= 15 * 1024 * 1024
    images = read_embedded()
    assert len(images) >= 1500
    assert images.images.shape[1:] == (64, 64, 3)
    assert images.class_names == tuple(ISIC_CLASSES)
    assert (images.class_counts() > 0).all()
    centres = set(images.meta["center"].tolist())
    assert len(centres) >= 3 and all(c.startswith("HAM_") for c in centres)
    assert (images.meta["lesion_id"] != "").all()
    assert set(images.meta["fold"].tolist()) == {"train", "test"}
    assert images.images.std() > 20


def test_embedded_rare_classes_are_kept_whole():
    counts = dict(zip(ISIC_CLASSES, read_embedded().class_counts(), strict=True))
    assert counts["AK"] == 130 and counts["DF"] == 115 and counts["VASC"] == 142


def test_embedded_sizes():
    assert read_embedded(image_size=32).images.shape[1:] == (32, 32, 3)
    with pytest.raises(ImageSizeError, match="64 px"):
        read_embedded(image_size=96)


def test_select_subset_caps_cells_and_ignores_row_order():
    labels = np.array([0] * 10 + [1] * 3 + [0] * 4)
    center = np.array(["A"] * 13 + ["B"] * 4)
    ids = np.array([f"id{i:02d}" for i in range(17)])
    rows = select_subset(labels, center, ids, centers=("A", "B"), cap=5, seed=0)
    assert len(rows) == 5 + 3 + 4
    perm = np.random.default_rng(1).permutation(17)
    again = select_subset(
        labels[perm], center[perm], ids[perm], centers=("A", "B"), cap=5, seed=0
    )
    assert ids[rows].tolist() == ids[perm][again].tolist()


def test_builder_is_byte_for_byte_deterministic(tmp_path):
    shared = build_shards(tmp_path / "shared", [0, 1, 2, 3, 4, 5, 6, 7] * 3)
    first = build_embedded_subset(shared, tmp_path / "a.npz")
    second = build_embedded_subset(shared, tmp_path / "b.npz")
    assert first.read_bytes() == second.read_bytes()
    images = read_embedded(path=first)
    assert len(images) == 24
    assert set(images.meta["center"].tolist()) == {"HAM_rosendahl", "HAM_vidir_modern"}
