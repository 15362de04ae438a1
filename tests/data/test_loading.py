"""load_images / load_train_test dispatch on DataConfig."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth_fl.config import DataConfig
from medsynth_fl.data import (
    DataError,
    UnknownCenterError,
    load_images,
    load_train_test,
    read_embedded,
)


def test_default_config_loads_the_embedded_subset():
    images = load_images(DataConfig(image_size=32))
    assert images.image_size == 32 and len(images) >= 1500


@pytest.mark.parametrize("source", ["shards", "isic_raw", "npz"])
def test_path_sources_need_a_path(source):
    with pytest.raises(DataError, match="needs data.path"):
        load_images(DataConfig(source=source))


def test_shards_with_centres(shards_dir):
    cfg = DataConfig(
        source="shards",
        path=str(shards_dir),
        classes=["MEL", "NV", "BCC"],
        centers=["HAM_vidir_modern"],
    )
    images = load_images(cfg)
    assert set(images.meta["center"].tolist()) == {"HAM_vidir_modern"}
    with pytest.raises(UnknownCenterError, match="HAM_rosendahl"):
        load_images(cfg.model_copy(update={"centers": ["BCN"]}))


def test_isic_raw_through_config_uses_cache_dir(isic_root, tmp_path):
    cache = tmp_path / "cache"
    cfg = DataConfig(
        source="isic_raw",
        path=str(isic_root()),
        image_size=16,
        classes=["MEL", "NV", "BCC"],
        cache_dir=str(cache),
    )
    assert len(load_images(cfg)) == 10
    assert len(list(cache.glob("isic_raw_16px_*.npz"))) == 1


def test_npz_through_config(tmp_path):
    saved = read_embedded(
        image_size=16, centers=["HAM_vienna_dias"], empty_class="skip"
    )
    path = saved.save_npz(tmp_path / "set.npz")
    cfg = DataConfig(source="npz", path=str(path), image_size=16, empty_class="skip")
    loaded = load_images(cfg)
    np.testing.assert_array_equal(loaded.images, saved.images)


def test_load_train_test_applies_the_split():
    cfg = DataConfig(image_size=16, split="lesion", test_fraction=0.25, split_seed=3)
    train, test = load_train_test(cfg)
    assert len(train) + len(test) == len(read_embedded(image_size=16))
    lesions = set(train.meta["lesion_id"].tolist()) & set(
        test.meta["lesion_id"].tolist()
    )
    assert not lesions - {""}
