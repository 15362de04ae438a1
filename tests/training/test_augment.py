"""Classifier augmentation: kornia transforms, MixUp/CutMix, the soft-target loss."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsynth_fl.config import ClassifierTrainConfig
from medsynth_fl.training.augment import (
    augment_batch,
    cutmix,
    mix_batch,
    mixup,
    one_hot_targets,
    smooth_targets,
    strong_augment,
)
from medsynth_fl.training.batches import dihedral_augment
from medsynth_fl.training.classifier import soft_cross_entropy

K = 5


def images(n=8, size=16, seed=0):
    return (
        torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2
        - 1
    )


def test_strong_augment_keeps_shape_and_range_and_is_seeded():
    x = images().requires_grad_(True)
    a = strong_augment(x, torch.Generator().manual_seed(3))
    b = strong_augment(x, torch.Generator().manual_seed(3))
    c = strong_augment(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # per image: not one transform for the whole batch
    same = images(1).expand(8, -1, -1, -1)
    out = strong_augment(same, torch.Generator().manual_seed(0))
    assert not torch.allclose(out[0], out[1])
    a.sum().backward()  # differentiable in the images
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_strong_augment_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    strong_augment(images(), torch.Generator().manual_seed(0))
    assert torch.equal(state, torch.get_rng_state())


def test_dihedral_mode_replays_the_old_augmentation():
    x, g = images(), torch.Generator()
    old = dihedral_augment(x, np.random.default_rng(5))
    assert torch.equal(augment_batch(x, "dihedral", np.random.default_rng(5), g), old)
    assert augment_batch(x, "none", np.random.default_rng(5), g) is x


def test_mixup_is_the_same_convex_combination_of_images_and_targets():
    # image j is the constant j, target j is one-hot j: a mixed image's value
    # must equal the mean class under its mixed target
    x = torch.arange(6.0)[:, None, None, None].expand(6, 3, 4, 4)
    t = one_hot_targets(torch.arange(6), 6)
    mx, mt = mixup(x, t, 1.0, np.random.default_rng(0))
    torch.testing.assert_close(mt.sum(1), torch.ones(6))
    torch.testing.assert_close(mx[:, 0, 0, 0], mt @ torch.arange(6.0))
    assert (mt.max(1).values < 1).any()  # something was mixed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cutmix_targets_are_the_pasted_areas(seed):
    x = torch.arange(6.0)[:, None, None, None].expand(6, 3, 16, 16).contiguous()
    t = one_hot_targets(torch.arange(6), 6)
    mx, mt = cutmix(x, t, 1.0, np.random.default_rng(seed))
    torch.testing.assert_close(mt.sum(1), torch.ones(6))
    area = torch.stack([(mx[:, 0] == c).float().mean((1, 2)) for c in range(6)], 1)
    torch.testing.assert_close(mt, area)


def test_both_picks_one_of_the_two_and_none_changes_nothing():
    x, t = images(), one_hot_targets(torch.arange(8) % K, K)
    assert mix_batch(x, t, "none", 1.0, np.random.default_rng(0)) == (x, t)
    for seed in range(4):
        mx, mt = mix_batch(x, t, "both", 0.5, np.random.default_rng(seed))
        torch.testing.assert_close(mt.sum(1), torch.ones(8))


def test_soft_cross_entropy_equals_hard_for_one_hot_and_with_smoothing():
    logits = torch.randn(7, K, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    torch.testing.assert_close(
        soft_cross_entropy(logits, one_hot_targets(y, K)), F.cross_entropy(logits, y)
    )
    torch.testing.assert_close(
        soft_cross_entropy(logits, one_hot_targets(y, K, 0.1)),
        F.cross_entropy(logits, y, label_smoothing=0.1),
    )
    assert smooth_targets(one_hot_targets(y, K), 0.0).max() == 1


def test_config_maps_old_booleans_and_names_a_bad_mode():
    assert ClassifierTrainConfig(augment=True).augment == "dihedral"
    assert ClassifierTrainConfig(augment=False).augment == "none"
    with pytest.raises(ValueError, match="augment"):
        ClassifierTrainConfig(augment="rotate")
