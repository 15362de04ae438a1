"""Batch weights: class re-weighting and equal exposure per lesion."""

import numpy as np
import pytest
import torch

from medsynth_fl.training.batches import BatchSampler, class_weights

# class 0: lesion a (3 images), b (1), c (1); class 1: lesion d (2), e (1), one image
# without a lesion id.
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])
LESIONS = np.array(["a", "a", "a", "b", "c", "d", "d", "e", ""])


@pytest.mark.parametrize("mode", ["natural", "sqrt", "balanced"])
def test_lesion_weighting_keeps_each_class_mass(mode):
    plain = class_weights(LABELS, 2, mode)
    by_lesion = class_weights(LABELS, 2, mode, LESIONS)
    np.testing.assert_allclose(
        np.bincount(LABELS, weights=by_lesion), np.bincount(LABELS, weights=plain)
    )


def test_every_lesion_of_a_class_gets_one_share():
    w = class_weights(LABELS, 2, "natural", LESIONS)
    # class 0 has mass 5/9 over 3 lesions; class 1 has 4/9 over d, e and the
    # id-less image (its own lesion).
    for lesion_images, share in (
        ([0, 1, 2], 5 / 9 / 3),
        ([3], 5 / 9 / 3),
        ([4], 5 / 9 / 3),
        ([5, 6], 4 / 9 / 3),
        ([7], 4 / 9 / 3),
        ([8], 4 / 9 / 3),
    ):
        assert w[lesion_images].sum() == pytest.approx(share)
    # within a lesion the images share equally
    np.testing.assert_allclose(w[[0, 1, 2]], w[0])


def test_singleton_lesions_change_nothing():
    ids = np.array([f"L{i}" for i in range(len(LABELS))])
    np.testing.assert_allclose(
        class_weights(LABELS, 2, "sqrt", ids), class_weights(LABELS, 2, "sqrt")
    )


def test_groups_must_match_the_images():
    with pytest.raises(ValueError, match="one entry per image"):
        class_weights(LABELS, 2, "natural", LESIONS[:-1])


def test_sampler_draws_a_photographed_lesion_as_often_as_a_single_one():
    x = torch.zeros(len(LABELS), 3, 4, 4)
    sampler = BatchSampler(x, torch.from_numpy(LABELS), 2, "natural", LESIONS)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(sampler.p), size=90_000, p=sampler.p)
    lesion_a = np.isin(idx, [0, 1, 2]).mean()
    lesion_b = (idx == 3).mean()
    assert lesion_a == pytest.approx(lesion_b, rel=0.05)
