"""Per-sample signals: shapes, blocking, devices and mode restoration."""

import numpy as np
import pytest
import torch

from medsynth_fl.privacy.features import RandomConvFeatures
from medsynth_fl.privacy.signals import (
    check_per_sample,
    critic_scores,
    embeddings,
    knn_distances,
    nn_distances,
    pixels,
)

from .fakes import RandomLinearCritic


def brute_knn(q, r, k, exclude_self=False):
    d = np.linalg.norm(q[:, None, :] - r[None, :, :], axis=-1)
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k]


@pytest.mark.parametrize("batch_size", [3, 512])
def test_knn_distances_match_brute_force_across_blocks(batch_size):
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(11, 5)), rng.normal(size=(7, 5))

    got = knn_distances(q, r, k=3, batch_size=batch_size)

    np.testing.assert_allclose(got, brute_knn(q, r, 3), rtol=1e-10)


def test_knn_distances_can_exclude_each_point_itself():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 4))

    got = knn_distances(x, x, k=2, exclude_self=True, batch_size=4)

    np.testing.assert_allclose(got, brute_knn(x, x, 2, exclude_self=True))
    assert np.all(nn_distances(x, x) == 0)  # without exclusion, each finds itself


def test_knn_distances_refuse_bad_requests():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError):
        knn_distances(x, x, k=3, exclude_self=True)  # only 2 others
    with pytest.raises(ValueError):
        knn_distances(x, np.zeros((3, 5)))
    with pytest.raises(ValueError):
        knn_distances(x, x[:2], exclude_self=True)


def test_check_per_sample_refuses_wrong_length_and_nan():
    assert check_per_sample(np.zeros(3), 3, "ok").shape == (3,)
    with pytest.raises(ValueError, match="expected"):
        check_per_sample(np.zeros(2), 3, "short")
    with pytest.raises(ValueError, match="NaN"):
        check_per_sample(np.array([0.0, np.nan, 1.0]), 3, "nan")


def test_critic_scores_are_batched_and_restore_training_mode():
    x = torch.randn(10, 3, 16, 16)
    critic = RandomLinearCritic(3 * 16 * 16).train()

    got = critic_scores(critic, x, torch.zeros(10, dtype=torch.long), batch_size=3)

    np.testing.assert_allclose(
        got, (x.flatten(1) @ critic.w).double().numpy(), rtol=1e-5
    )
    assert got.dtype == np.float64 and critic.training


def test_embeddings_and_pixels_have_one_row_per_image():
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    net = RandomConvFeatures(width=4, grid=2)

    emb = embeddings(net.embed, x, batch_size=2)

    assert emb.shape == (5, net.embed_dim) == (5, 8 * 4)
    assert pixels(x).shape == (5, 768)
    np.testing.assert_allclose(emb, net.embed(x).numpy(), rtol=1e-5, atol=1e-6)


def test_random_features_are_fixed_by_their_seed():
    x = torch.rand(2, 3, 16, 16)
    a, b = RandomConvFeatures(seed=1), RandomConvFeatures(seed=1)

    assert torch.equal(a(x), b(x))
    assert not torch.equal(a(x), RandomConvFeatures(seed=2)(x))
    assert not any(p.requires_grad for p in a.parameters())
