"""Lesion-safe train/test splits."""

from __future__ import annotations

import numpy as np
import pytest

from medsynth_fl.data import read_embedded, split_train_test
from medsynth_fl.data.errors import DataFormatError
from medsynth_fl.data.imageset import ImageSet


@pytest.fixture(scope="module")
def embedded() -> ImageSet:
    return read_embedded(image_size=16)


def _lesions(images: ImageSet) -> set[str]:
    return set(images.meta["lesion_id"].tolist()) - {""}


@pytest.mark.parametrize("method", ["flamby", "lesion"])
def test_no_lesion_on_both_sides(embedded, method):
    train, test = split_train_test(embedded, method, 0.2, seed=0)
    assert len(train) > 0 and len(test) > 0
    assert not _lesions(train) & _lesions(test)
    assert not set(train.meta["image_ids"]) & set(test.meta["image_ids"])


def test_lesion_split_covers_all_and_is_stratified(embedded):
    train, test = split_train_test(embedded, "lesion", 0.2, seed=0)
    assert len(train) + len(test) == len(embedded)
    assert 0.15 < len(test) / len(embedded) < 0.25
    share = test.class_counts() / embedded.class_counts()
    assert (share > 0.1).all() and (share < 0.3).all()


def test_lesion_split_is_seeded(embedded):
    a = split_train_test(embedded, "lesion", 0.2, seed=0)[1].meta["image_ids"]
    b = split_train_test(embedded, "lesion", 0.2, seed=0)[1].meta["image_ids"]
    c = split_train_test(embedded, "lesion", 0.2, seed=1)[1].meta["image_ids"]
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()


def test_flamby_keeps_train_fold_and_drops_straddling_test(embedded):
    fold = embedded.meta["fold"]
    train, test = split_train_test(embedded, "flamby", 0.2, seed=0)
    assert len(train) == int((fold == "train").sum())
    assert set(test.meta["fold"].tolist()) == {"test"}
    straddling = (fold == "test") & np.isin(
        embedded.meta["lesion_id"], embedded.meta["lesion_id"][fold == "train"]
    )
    assert straddling.any()  # FLamby's fold really is not lesion-grouped
    assert len(test) == int((fold == "test").sum() - straddling.sum())


def _toy(fold: list[str], lesion: list[str]) -> ImageSet:
    n = len(fold)
    meta = {
        "image_ids": np.array([f"x{i}" for i in range(n)]),
        "center": np.array(["A"] * n),
        "lesion_id": np.array(lesion),
        "fold": np.array(fold),
    }
    return ImageSet(
        np.zeros((n, 2, 2, 3), np.uint8), np.arange(n) % 2, ("a", "b"), meta
    )


def test_images_without_fold_get_a_grouped_split():
    fold = ["train", "test"] + [""] * 20
    lesion = ["L0", "L1"] + [f"U{i // 2}" for i in range(20)]
    train, test = split_train_test(_toy(fold, lesion), "flamby", 0.2, seed=0)
    assert len(train) + len(test) == 22
    assert "x0" in train.meta["image_ids"] and "x1" in test.meta["image_ids"]
    assert len(test) > 1  # some fold-less images went to test
    assert not _lesions(train) & _lesions(test)


def test_flamby_without_any_fold_falls_back_to_lesion_split():
    lesion = [f"L{i // 2}" for i in range(20)]
    train, test = split_train_test(_toy([""] * 20, lesion), "flamby", 0.2, seed=0)
    assert len(train) + len(test) == 20 and len(test) > 0
    assert not _lesions(train) & _lesions(test)


def test_empty_lesion_ids_are_their_own_groups():
    train, test = split_train_test(_toy([""] * 10, [""] * 10), "lesion", 0.2, seed=0)
    assert len(train) == 8 and len(test) == 2


def test_unknown_fold_value_is_rejected():
    with pytest.raises(DataFormatError, match="validation"):
        split_train_test(_toy(["train", "validation"], ["a", "b"]), "flamby")
