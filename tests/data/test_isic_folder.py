"""Reader of the official ISIC 2019 folder layout, on tiny fake folders."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from medsynth_fl.data import isic_folder
from medsynth_fl.data.errors import (
    CorruptImageError,
    DataFormatError,
    EmptyClassError,
    MissingImageError,
    MissingPathError,
    UnknownCenterError,
    UnknownLabelError,
)
from medsynth_fl.data.isic_folder import read_isic_raw

from .data_fakes import SHARED_DATA, write_csv

CLASSES = ["MEL", "NV", "BCC"]


@pytest.fixture
def decode_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the file name of every JPEG the reader decodes."""
    calls: list[str] = []
    real = isic_folder._decode_file

    def counting(path, size):
        calls.append(path.name)
        return real(path, size)

    monkeypatch.setattr(isic_folder, "_decode_file", counting)
    return calls


def test_reads_layout_with_metadata_and_centres(isic_root):
    root = isic_root()
    images = read_isic_raw(root, image_size=24, classes=CLASSES)
    assert images.images.shape == (10, 24, 24, 3)
    assert images.class_names == tuple(CLASSES)
    assert images.class_counts().tolist() == [3, 4, 3]
    assert images.meta["image_ids"][0] == "ISIC_0000000"
    assert images.meta["center"].tolist()[:4] == ["A", "B", "A", "B"]
    assert images.meta["fold"].tolist()[:4] == ["train", "train", "train", "test"]
    assert images.meta["lesion_id"].tolist()[:3] == ["L0", "L0", "L1"]
    assert images.meta["lesion_id"][-1] == ""


def test_labels_follow_configured_order_and_other_classes_are_dropped(
    isic_root, caplog
):
    root = isic_root()
    with caplog.at_level(logging.INFO):
        images = read_isic_raw(root, image_size=16, classes=["BCC", "MEL"])
    assert images.class_counts().tolist() == [3, 3]
    # ids 0..2 are MEL and 7..9 are BCC in the fake ground truth
    assert images.labels[images.meta["image_ids"] == "ISIC_0000000"].tolist() == [1]
    assert images.labels[images.meta["image_ids"] == "ISIC_0000009"].tolist() == [0]
    assert "dropped 4 image(s)" in caplog.text and "NV: 4" in caplog.text


def test_without_optional_csvs_meta_is_empty(isic_root):
    root = isic_root(metadata=False, centers=False)
    images = read_isic_raw(root, image_size=16, classes=CLASSES)
    for key in ("center", "fold", "lesion_id"):
        assert set(images.meta[key].tolist()) == {""}


def test_explicit_centre_csv_is_used(isic_root, tmp_path):
    root = isic_root(centers=False)
    explicit = tmp_path / "my_centres.csv"
    rows = [[f"ISIC_{k:07d}", "NV", 7, "Z", "train"] for k in range(10)]
    write_csv(explicit, ["image", "label", "center_id", "center", "fold"], rows)
    images = read_isic_raw(root, image_size=16, classes=CLASSES, centers_csv=explicit)
    assert set(images.meta["center"].tolist()) == {"Z"}


def test_missing_root_input_folder_and_csv(isic_root, tmp_path):
    with pytest.raises(MissingPathError, match="nowhere"):
        read_isic_raw(tmp_path / "nowhere")
    root = isic_root()
    (root / "ISIC_2019_Training_GroundTruth.csv").unlink()
    with pytest.raises(MissingPathError, match="ISIC_2019_Training_GroundTruth.csv"):
        read_isic_raw(root)
    os.rename(root / "ISIC_2019_Training_Input", root / "elsewhere")
    with pytest.raises(MissingPathError, match="ISIC_2019_Training_Input"):
        read_isic_raw(root)


def test_missing_image_names_the_id(isic_root):
    root = isic_root()
    (root / "ISIC_2019_Training_Input" / "ISIC_0000004.jpg").unlink()
    with pytest.raises(MissingImageError, match="ISIC_0000004"):
        read_isic_raw(root, classes=CLASSES)


def test_corrupt_jpeg_is_skipped_and_counted(isic_root, caplog):
    root = isic_root()
    (root / "ISIC_2019_Training_Input" / "ISIC_0000005.jpg").write_bytes(b"not a jpeg")
    with caplog.at_level(logging.WARNING):
        images = read_isic_raw(root, image_size=16, classes=CLASSES, on_corrupt="skip")
    assert len(images) == 9
    assert "ISIC_0000005" not in images.meta["image_ids"]
    assert "skipped 1 corrupt image(s)" in caplog.text and "ISIC_0000005" in caplog.text


def test_truncated_jpeg_is_fatal_when_asked(isic_root):
    root = isic_root()
    path = root / "ISIC_2019_Training_Input" / "ISIC_0000002.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CorruptImageError, match="ISIC_0000002"):
        read_isic_raw(root, image_size=16, classes=CLASSES, on_corrupt="error")


def test_unknown_class_lists_the_columns(isic_root):
    with pytest.raises(UnknownLabelError, match="FOO.*'MEL', 'NV'"):
        read_isic_raw(isic_root(), classes=["MEL", "FOO"])


def test_empty_class_errors_or_warns(isic_root, caplog):
    root = isic_root()
    with pytest.raises(EmptyClassError, match="DF"):
        read_isic_raw(root, image_size=16, classes=["MEL", "DF"])
    with caplog.at_level(logging.WARNING):
        images = read_isic_raw(
            root, image_size=16, classes=["MEL", "DF"], empty_class="skip"
        )
    assert images.class_names == ("MEL", "DF")
    assert images.class_counts().tolist() == [3, 0]
    assert "DF" in caplog.text


def test_centre_filter_and_unknown_centre(isic_root):
    root = isic_root()
    with pytest.raises(UnknownCenterError, match=r"\['A', 'B'\]"):
        read_isic_raw(root, classes=CLASSES, centers=["C"])
    images = read_isic_raw(root, image_size=16, classes=CLASSES, centers=["B"])
    assert len(images) == 5
    assert set(images.meta["center"].tolist()) == {"B"}


def test_not_one_hot_row_is_rejected(isic_root):
    root = isic_root()
    gt = root / "ISIC_2019_Training_GroundTruth.csv"
    lines = gt.read_text().splitlines()
    lines[2] = lines[2].replace("0.0", "1.0", 1)
    gt.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match="ISIC_0000001"):
        read_isic_raw(root, classes=CLASSES)


def test_second_load_decodes_nothing(isic_root, tmp_path, decode_counter):
    root = isic_root()
    cache = tmp_path / "cache"
    first = read_isic_raw(root, image_size=16, classes=CLASSES, cache_dir=cache)
    assert len(decode_counter) == 10
    second = read_isic_raw(root, image_size=16, classes=CLASSES, cache_dir=cache)
    assert len(decode_counter) == 10
    np.testing.assert_array_equal(first.images, second.images)
    read_isic_raw(root, image_size=20, classes=CLASSES, cache_dir=cache)
    assert len(decode_counter) == 20  # other size: new key


def test_cache_key_follows_file_changes(isic_root, tmp_path, decode_counter):
    root = isic_root()
    cache = tmp_path / "cache"
    read_isic_raw(root, image_size=16, classes=CLASSES, cache_dir=cache)
    path = root / "ISIC_2019_Training_Input" / "ISIC_0000003.jpg"
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    read_isic_raw(root, image_size=16, classes=CLASSES, cache_dir=cache)
    assert len(decode_counter) == 20


def test_cached_corrupt_images_still_reported(isic_root, tmp_path, decode_counter):
    root = isic_root()
    (root / "ISIC_2019_Training_Input" / "ISIC_0000001.jpg").write_bytes(b"\xff\xd8")
    cache = tmp_path / "cache"
    read_isic_raw(root, image_size=16, classes=CLASSES, cache_dir=cache)
    with pytest.raises(CorruptImageError, match="ISIC_0000001"):
        read_isic_raw(
            root, image_size=16, classes=CLASSES, cache_dir=cache, on_corrupt="error"
        )
    assert len(decode_counter) == 10


@pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason="../shared/data not beside the repo"
)
def test_real_raw_sample(tmp_path):
    root = SHARED_DATA / "raw_sample"
    centres = SHARED_DATA / "metadata" / "isic2019_flamby_centers.csv"
    images = read_isic_raw(root, image_size=32, cache_dir=tmp_path, centers_csv=centres)
    assert images.images.shape == (40, 32, 32, 3)
    assert images.class_counts().tolist() == [5] * 8
    assert {"HAM_rosendahl", "HAM_vidir_modern"} <= set(images.meta["center"].tolist())
    assert images.images.std() > 10  # real pictures, not blank arrays
