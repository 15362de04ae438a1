"""Reader of the packed shards, on fake shards in tmp_path."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medsynth_fl.data.errors import (
    CorruptImageError,
    DataFormatError,
    EmptyClassError,
    ImageSizeError,
    MissingPathError,
    UnknownCenterError,
    UnknownLabelError,
)
from medsynth_fl.data.sources import read_shards

from .data_fakes import build_shards

CLASSES = ["MEL", "NV", "BCC"]


def test_64px_arrays_and_class_mapping_by_name(shards_dir, caplog):
    with caplog.at_level(logging.INFO):
        images = read_shards(shards_dir, image_size=64, classes=["NV", "MEL", "BCC"])
    assert images.images.shape == (15, 64, 64, 3)  # the UNK image is dropped
    assert "dropped 1 image(s)" in caplog.text and "UNK: 1" in caplog.text
    with np.load(shards_dir / "isic_64_part00.npz") as z:
        first, first_label = z["images"][0], int(z["labels"][0])
    assert first_label == 0  # MEL in the shard's class list ...
    assert images.labels[0] == 1  # ... is index 1 of the configured list
    np.testing.assert_array_equal(images.images[0], first)
    assert images.meta["image_ids"][0] == "ISIC_0000000"
    assert set(images.meta["fold"].tolist()) == {"train", "test"}
    assert images.meta["lesion_id"][1] == "HAM_0000000"


def test_sizes_pick_the_right_layout(shards_dir):
    assert read_shards(shards_dir, image_size=32, classes=CLASSES).image_size == 32
    from_jpeg = read_shards(shards_dir, image_size=128, classes=CLASSES)
    assert from_jpeg.images.shape == (15, 128, 128, 3)
    assert read_shards(shards_dir, image_size=96, classes=CLASSES).image_size == 96
    with pytest.raises(ImageSizeError, match="at most 128"):
        read_shards(shards_dir, image_size=129, classes=CLASSES)


def test_jpeg_layout_is_decoded_faithfully(shards_dir):
    arrays = read_shards(shards_dir, image_size=64, classes=CLASSES)
    decoded = read_shards(shards_dir, image_size=128, classes=CLASSES)
    np.testing.assert_array_equal(arrays.labels, decoded.labels)
    np.testing.assert_array_equal(arrays.meta["image_ids"], decoded.meta["image_ids"])
    # the 128 px JPEG, subsampled 2×, matches the 64 px array of the same image
    small = decoded.images[:, ::2, ::2].astype(int)
    same = np.abs(small - arrays.images).mean()
    shifted = np.abs(small - np.roll(arrays.images, 1, axis=0)).mean()
    assert same < 5 < shifted


def test_missing_folder_and_no_shards(tmp_path):
    with pytest.raises(MissingPathError, match="nowhere"):
        read_shards(tmp_path / "nowhere")
    with pytest.raises(MissingPathError, match="isic_64_part"):
        read_shards(tmp_path)


def _corrupt_first_jpeg(folder):
    path = folder / "isic_128jpg_part00.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    start, end = arrays["offsets"][1], arrays["offsets"][2]
    arrays["jpeg"][start:end] = 0  # image 1 (ISIC_0000001) becomes garbage
    np.savez(path, **arrays)


def test_corrupt_jpeg_bytes_skip_or_error(shards_dir, caplog):
    _corrupt_first_jpeg(shards_dir)
    with caplog.at_level(logging.WARNING):
        images = read_shards(shards_dir, image_size=100, classes=CLASSES)
    assert len(images) == 14
    assert "ISIC_0000001" not in images.meta["image_ids"]
    assert "skipped 1 corrupt" in caplog.text and "ISIC_0000001" in caplog.text
    with pytest.raises(CorruptImageError, match="ISIC_0000001"):
        read_shards(shards_dir, image_size=100, classes=CLASSES, on_corrupt="error")


def test_unknown_and_empty_classes(shards_dir):
    with pytest.raises(UnknownLabelError, match="'XYZ'.*'MEL', 'NV'"):
        read_shards(shards_dir, classes=["MEL", "XYZ"])
    with pytest.raises(EmptyClassError, match="VASC"):
        read_shards(shards_dir, classes=["MEL", "VASC"])
    images = read_shards(shards_dir, classes=["MEL", "VASC"], empty_class="skip")
    assert images.class_counts().tolist() == [5, 0]


def test_centre_filter(shards_dir):
    images = read_shards(shards_dir, classes=CLASSES, centers=["HAM_rosendahl"])
    assert set(images.meta["center"].tolist()) == {"HAM_rosendahl"}
    with pytest.raises(UnknownCenterError, match="HAM_vidir_modern"):
        read_shards(shards_dir, classes=CLASSES, centers=["BCN"])


def test_missing_key_and_mismatched_class_lists(tmp_path):
    folder = build_shards(tmp_path / "s", [0, 1, 2, 0, 1, 2])
    path = folder / "isic_64_part01.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(path, **{k: v for k, v in arrays.items() if k != "lesion_id"})
    with pytest.raises(DataFormatError, match="lesion_id"):
        read_shards(folder, classes=CLASSES)
    arrays["class_names"] = arrays["class_names"][::-1].copy()
    np.savez(path, **arrays)
    with pytest.raises(DataFormatError, match="class_names"):
        read_shards(folder, classes=CLASSES)
