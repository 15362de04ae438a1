"""Soft labels on an ImageSet: validation, subsets, concatenation and the npz format."""

import numpy as np
import pytest

from medsynth_fl.data.errors import DataFormatError
from medsynth_fl.data.imageset import ImageSet
from medsynth_fl.data.sources import load_npz

NAMES = ("MEL", "NV", "BCC")


def soft_set(n=4):
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return ImageSet(images, soft.argmax(1), NAMES, soft_labels=soft)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.full((4, 2), 0.5, np.float32), "4×3"),
        (np.full((4, 3), 1 / 3, np.float64), "float32"),
        (np.full((4, 3), 0.5, np.float32), "sum to 1"),
        (np.array([[2, -1, 0]] * 4, np.float32), "probabilities"),
    ],
)
def test_invalid_soft_labels_are_refused(bad, message):
    s = soft_set()
    with pytest.raises(ValueError, match=message):
        ImageSet(s.images, s.labels, NAMES, soft_labels=bad)


def test_subset_keeps_and_concat_fills_one_hot_rows():
    s = soft_set()
    sub = s.subset(np.array([2, 0]))
    np.testing.assert_array_equal(sub.soft_labels, s.soft_labels[[2, 0]])
    hard = ImageSet(s.images[:2], np.array([1, 2]), NAMES)
    joined = ImageSet.concat([s, hard])
    np.testing.assert_array_equal(joined.soft_labels[:4], s.soft_labels)
    np.testing.assert_array_equal(joined.soft_labels[4:], np.eye(3)[[1, 2]])
    assert ImageSet.concat([hard, hard]).soft_labels is None


def test_npz_round_trip_and_class_selection(tmp_path):
    s = soft_set()
    path = s.save_npz(tmp_path / "s.npz")
    loaded = load_npz(path, classes=NAMES)
    np.testing.assert_array_equal(loaded.soft_labels, s.soft_labels)
    # reordered and reduced classes: columns follow, rows renormalised
    picked = load_npz(path, classes=["BCC", "MEL"], empty_class="skip")
    rows = np.isin(s.labels, [0, 2])
    expect = s.soft_labels[rows][:, [2, 0]]
    np.testing.assert_allclose(
        picked.soft_labels, expect / expect.sum(1, keepdims=True), rtol=1e-6
    )
    plain = load_npz(
        ImageSet(s.images, s.labels, NAMES).save_npz(tmp_path / "p.npz"), classes=NAMES
    )
    assert plain.soft_labels is None


def test_npz_with_malformed_soft_labels_is_refused(tmp_path):
    s = soft_set()
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        images=s.images,
        labels=s.labels,
        class_names=np.array(NAMES),
        soft_labels=np.ones((4, 2), np.float32),
    )
    with pytest.raises(DataFormatError, match="soft_labels"):
        load_npz(path, classes=NAMES)
