"""Reading an ImageSet saved with ImageSet.save_npz."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth_fl.data.errors import (
    DataFormatError,
    ImageSizeError,
    MissingPathError,
    UnknownLabelError,
)
from medsynth_fl.data.imageset import ImageSet
from medsynth_fl.data.sources import load_npz

CLASSES = ("MEL", "NV")


def _imageset(n: int = 6, size: int = 16) -> ImageSet:
    rng = np.random.default_rng(0)
    meta = {
        "image_ids": np.array([f"x{i}" for i in range(n)]),
        "center": np.array(["A", "B"] * (n // 2)),
        "lesion_id": np.array([f"L{i // 2}" for i in range(n)]),
        "fold": np.array(["train"] * (n - 1) + ["test"]),
    }
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return ImageSet(images, np.arange(n) % 2, CLASSES, meta)


def test_round_trip(tmp_path):
    original = _imageset()
    loaded = load_npz(original.save_npz(tmp_path / "s.npz"), classes=CLASSES)
    np.testing.assert_array_equal(loaded.images, original.images)
    np.testing.assert_array_equal(loaded.labels, original.labels)
    assert loaded.class_names == CLASSES
    for key, values in original.meta.items():
        np.testing.assert_array_equal(loaded.meta[key], values)


def test_resize_down_refuse_up_and_select(tmp_path):
    path = _imageset().save_npz(tmp_path / "s.npz")
    assert load_npz(path, image_size=8, classes=CLASSES).image_size == 8
    with pytest.raises(ImageSizeError, match="16 px"):
        load_npz(path, image_size=32, classes=CLASSES)
    only_b = load_npz(path, classes=["NV"], centers=["B"])
    assert len(only_b) == 3 and only_b.labels.tolist() == [0, 0, 0]
    with pytest.raises(UnknownLabelError, match="BCC"):
        load_npz(path, classes=["BCC"])


def test_pickled_object_arrays_are_refused(tmp_path):
    path = tmp_path / "evil.npz"
    images = np.zeros((1, 4, 4, 3), np.uint8)
    names = np.array([{"x": 1}], dtype=object)
    np.savez(path, images=images, labels=np.zeros(1, np.int64), class_names=names)
    with pytest.raises(DataFormatError, match="pickle"):
        load_npz(path, classes=CLASSES)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": np.zeros((2, 4, 4, 3), np.float32)}, "uint8"),
        ({"images": np.zeros((2, 4, 5, 3), np.uint8)}, "square"),
        ({"labels": np.array([0, 5])}, "outside"),
        ({"labels": np.array([0.0, 1.0])}, "integers"),
        ({"center": np.array(["A"])}, "'center'"),
    ],
)
def test_bad_contents_are_named(tmp_path, change, message):
    arrays = {
        "images": np.zeros((2, 4, 4, 3), np.uint8),
        "labels": np.array([0, 1]),
        "class_names": np.array(CLASSES),
        "center": np.array(["A", "B"]),
    }
    arrays.update(change)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataFormatError, match=message):
        load_npz(tmp_path / "bad.npz", classes=CLASSES)


def test_missing_key_and_missing_file(tmp_path):
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((1, 4, 4, 3), np.uint8))
    with pytest.raises(DataFormatError, match="labels"):
        load_npz(tmp_path / "nolabels.npz")
    with pytest.raises(MissingPathError, match="absent.npz"):
        load_npz(tmp_path / "absent.npz")
