"""KID and precision/recall on features whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.sample_quality import (
    _unbiased_mmd2,
    kernel_inception_distance,
    precision_recall,
    sample_quality,
)

RNG = np.random.default_rng(0)


def _gauss(n: int, centre: float = 0.0, d: int = 4) -> np.ndarray:
    return RNG.normal(centre, 1.0, (n, d))


def test_one_distribution_reads_kid_zero_and_full_precision_recall():
    real, fake = _gauss(400), _gauss(300)
    kid = kernel_inception_distance(real, fake, n_subsets=50)
    assert kid.ci_low <= 0.0 <= kid.ci_high
    precision, recall = precision_recall(real, fake, n_bootstrap=20)
    assert precision.mean > 0.85 and recall.mean > 0.85
    assert precision.ci_low <= precision.mean <= precision.ci_high


def test_a_distant_generator_is_neither_precise_nor_covering():
    real, fake = _gauss(300), _gauss(300, centre=8.0)
    kid = kernel_inception_distance(real, fake, n_subsets=20)
    assert kid.ci_low > 0.1
    precision, recall = precision_recall(real, fake, n_bootstrap=10)
    assert precision.mean == 0.0 and recall.mean == 0.0


def test_mode_dropping_keeps_precision_and_halves_recall():
    real = np.vstack([_gauss(200, -6.0), _gauss(200, 6.0)])
    fake = _gauss(200, -6.0)  # the generator draws one of the two modes only
    precision, recall = precision_recall(real, fake, n_bootstrap=20)
    assert precision.mean > 0.85
    assert 0.35 < recall.mean < 0.55
    assert recall.ci_high < 0.6


def test_kid_is_the_unbiased_mmd_of_the_cubic_kernel():
    x, y = _gauss(6, d=3), _gauss(5, 1.0, d=3)

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    xx = np.mean([k(x[i], x[j]) for i in range(6) for j in range(6) if i != j])
    yy = np.mean([k(y[i], y[j]) for i in range(5) for j in range(5) if i != j])
    xy = np.mean([k(a, b) for a in x for b in y])
    assert _unbiased_mmd2(x, y) == pytest.approx(xx + yy - 2 * xy)
    # KID averages that estimate over random half-size subsets of both sets
    real, fake = _gauss(40, d=3), _gauss(30, 1.0, d=3)
    kid = kernel_inception_distance(real, fake, n_subsets=200)
    rng = np.random.default_rng(0)
    by_hand = np.mean(
        [
            _unbiased_mmd2(
                real[rng.choice(40, 15, replace=False)],
                fake[rng.choice(30, 15, replace=False)],
            )
            for _ in range(200)
        ]
    )
    assert kid.mean == pytest.approx(by_hand)


def test_bad_features_are_refused_and_the_record_is_json_ready():
    with pytest.raises(ValueError, match="finite"):
        sample_quality(np.full((10, 2), np.nan), _gauss(10, d=2))
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(_gauss(3), _gauss(20))
    record = sample_quality(_gauss(50), _gauss(40), n_bootstrap=5)
    assert set(record) == {"kid", "precision", "recall", "n_real", "n_fake"}
    assert record["n_fake"] == 40 and set(record["kid"]) == {
        "mean",
        "ci_low",
        "ci_high",
    }
