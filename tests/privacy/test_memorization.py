"""Seed 001's memorisation rate and rejection filter on hand-made images."""

import numpy as np
import pytest

from medsynth_fl.privacy.features import RandomConvFeatures
from medsynth_fl.privacy.memorization import (
    distinct_images,
    image_points,
    memorization_rate,
    min_distinct_distance,
    reject_memorized,
)

from .fakes import image_set

# 2×2 images of one grey level v: in [-1, 1] they are the point (v/127.5 − 1)·1 in
# 12 dimensions, so the distance between levels u and v is |u − v|/127.5 · √12.
SQRT12 = np.sqrt(12.0)


def flat(*levels):
    """One 2×2 RGB image per grey level."""
    return image_set(np.stack([np.full((2, 2, 3), v, np.uint8) for v in levels]))


TRAIN = flat(0, 255, 64)  # closest pair: 0 and 64
THRESHOLD = 64 / 127.5 * SQRT12  # 1.7388…
# A copy of 255, a sample at 160 (≥ 95 levels = 2.58 from every training image)
# and a sample at 100 (36 levels = 0.98 from 64): the copy and 100 are "same identity".
GENERATED = flat(255, 160, 100)


def test_threshold_is_the_minimum_distance_between_distinct_training_images():
    assert min_distinct_distance(image_points(TRAIN)) == pytest.approx(THRESHOLD)
    # A duplicated training image does not set the threshold to 0.
    with_duplicate = flat(0, 255, 64, 0)
    assert min_distinct_distance(image_points(with_duplicate)) == pytest.approx(
        THRESHOLD
    )
    assert len(distinct_images(with_duplicate)) == 3


def test_memorization_rate_counts_samples_closer_than_the_threshold():
    rate = memorization_rate(image_points(GENERATED), image_points(TRAIN))

    assert rate == pytest.approx(2 / 3)
    assert memorization_rate(image_points(flat(160)), image_points(TRAIN)) == 0.0


def test_a_copied_training_image_is_memorised_in_embedding_space_too():
    rng = np.random.default_rng(0)
    train = image_set(rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8))
    generated = image_set(np.concatenate([train.images[:1], 255 - train.images[1:3]]))
    embed = RandomConvFeatures(width=8, seed=0).embed

    rate = memorization_rate(image_points(generated, embed), image_points(train, embed))

    assert rate == pytest.approx(1 / 3)


def test_rejection_filter_drops_the_copies_and_reports_the_rate():
    result = reject_memorized(GENERATED, TRAIN)

    assert result.rejected.tolist() == [True, False, True]
    assert result.rejection_rate == pytest.approx(2 / 3)
    assert result.threshold == pytest.approx(THRESHOLD)
    assert result.kept.images[:, 0, 0, 0].tolist() == [160]


def test_rejection_filter_accepts_a_given_threshold():
    result = reject_memorized(GENERATED, TRAIN, threshold=0.5)  # only the exact copy

    assert result.rejected.tolist() == [True, False, False]


def test_rejection_needs_samples_and_two_distinct_training_images():
    with pytest.raises(ValueError):
        reject_memorized(GENERATED, flat(7, 7))
    with pytest.raises(ValueError):
        reject_memorized(GENERATED.subset(np.zeros(3, bool)), TRAIN)
