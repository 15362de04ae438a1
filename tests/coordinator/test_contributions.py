"""Known-answer tests of the site contributions (Shapley, leave-one-out, alone)."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.contributions import (
    CoalitionPredictions,
    compute_contributions,
    exact_shapley,
    linear_probe_trainer,
    monte_carlo_shapley,
    permutations,
    score_predictions,
)

N_CLASSES = 4
CLASSES = [f"c{k}" for k in range(N_CLASSES)]
CENTRES = np.random.default_rng(7).normal(0.0, 1.6, size=(N_CLASSES, 6))


def blobs(n_per_class: int, classes, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian class blobs: the features a frozen network would give each class."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.asarray(classes), n_per_class)
    return CENTRES[y] + rng.normal(size=(len(y), CENTRES.shape[1])), y


def predictions_of(sites: dict[str, tuple[np.ndarray, np.ndarray]], eval_set):
    x_eval, _ = eval_set
    train = linear_probe_trainer(
        {s: d[0] for s, d in sites.items()},
        {s: d[1] for s, d in sites.items()},
        x_eval,
        N_CLASSES,
    )
    return CoalitionPredictions(tuple(sites), len(x_eval), N_CLASSES, train)


@pytest.fixture(scope="module")
def eval_set():
    return blobs(60, range(N_CLASSES), seed=100)


def test_shapley_values_sum_to_the_grand_coalition_gain(eval_set):
    sites = {f"s{i}": blobs(8 + 4 * i, range(N_CLASSES), seed=i) for i in range(4)}
    out = compute_contributions(
        predictions_of(sites, eval_set), eval_set[1], CLASSES, n_bootstrap=0
    )
    total = np.sum([[e.mean for e in c.shapley] for c in out.sites.values()], axis=0)
    np.testing.assert_allclose(
        total, np.subtract(out.grand_value, out.empty_value), atol=1e-9
    )
    assert out.method == "exact" and out.coalitions_trained == 2**4 - 1


def test_a_duplicated_site_gets_the_same_value_as_its_twin(eval_set):
    twin = blobs(10, range(N_CLASSES), seed=1)
    sites = {"a": twin, "b": twin, "c": blobs(30, range(N_CLASSES), seed=2)}
    shap = exact_shapley(
        list(sites),
        lambda s: score_predictions(eval_set[1], predictions_of(sites, eval_set)(s)),
    )
    np.testing.assert_allclose(shap["a"], shap["b"], atol=1e-3)


def test_a_site_with_shuffled_labels_is_worth_nothing_or_less(eval_set):
    rng = np.random.default_rng(3)
    x, y = blobs(40, range(N_CLASSES), seed=4)
    sites = {
        "good1": blobs(15, range(N_CLASSES), seed=5),
        "good2": blobs(15, range(N_CLASSES), seed=6),
        "noisy": (x, rng.permutation(y)),
    }
    out = compute_contributions(
        predictions_of(sites, eval_set), eval_set[1], CLASSES, n_bootstrap=20
    )
    value = {s: c.shapley[0].mean for s, c in out.sites.items()}
    assert value["noisy"] < 0.02
    assert value["noisy"] == min(value.values())
    assert out.sites["noisy"].shapley[0].ci_high < 0.01
    assert out.sites["noisy"].loo[0].mean <= 0.01  # dropping it loses nothing


def test_the_only_site_holding_a_class_contributes_most_to_it(eval_set):
    sites = {
        "common1": blobs(20, [0, 1, 2], seed=8),
        "common2": blobs(20, [0, 1, 2], seed=9),
        "rare": blobs(6, [1, 3], seed=10),
    }
    out = compute_contributions(
        predictions_of(sites, eval_set), eval_set[1], CLASSES, n_bootstrap=0
    )
    per_class = out.per_class_shapley()
    assert max(per_class, key=lambda s: per_class[s]["c3"]) == "rare"
    assert per_class["rare"]["c3"] > 0.2


def test_monte_carlo_agrees_with_exact_shapley_within_its_standard_error(eval_set):
    sites = {f"s{i}": blobs(3 + 5 * i, range(N_CLASSES), seed=20 + i) for i in range(5)}
    preds = predictions_of(sites, eval_set)

    def value(s):
        return score_predictions(eval_set[1], preds(s))

    exact = exact_shapley(list(sites), value)
    mc = monte_carlo_shapley(list(sites), value, permutations(list(sites), 300, seed=0))
    for s in sites:
        assert abs(mc.mean[s][0] - exact[s][0]) <= 3 * mc.stderr[s][0] + 1e-6
    truncated = monte_carlo_shapley(
        list(sites), value, permutations(list(sites), 50, seed=0), truncation_tol=0.02
    )
    assert truncated.coalitions_valued <= 2**5


def test_bootstrap_intervals_bracket_the_point_value(eval_set):
    sites = {f"s{i}": blobs(10, range(N_CLASSES), seed=30 + i) for i in range(3)}
    out = compute_contributions(
        predictions_of(sites, eval_set), eval_set[1], CLASSES, n_bootstrap=30
    )
    for c in out.sites.values():
        for est in (c.shapley[0], c.loo[0], c.alone[0]):
            assert est.ci_low <= est.mean <= est.ci_high
    data = out.as_dict()
    assert set(data["sites"]["s0"]) == {"shapley", "loo", "alone"}
    assert set(data["sites"]["s0"]["shapley"]) == {"mean", "ci_low", "ci_high"}


def test_each_coalition_is_trained_once_and_empty_predicts_uniform(eval_set):
    calls = []
    inner = predictions_of(
        {f"s{i}": blobs(5, range(N_CLASSES), seed=40 + i) for i in range(3)}, eval_set
    ).train

    def counting(coalition):
        calls.append(coalition)
        return inner(coalition)

    preds = CoalitionPredictions(
        ("s0", "s1", "s2"), len(eval_set[0]), N_CLASSES, counting
    )
    compute_contributions(preds, eval_set[1], CLASSES, n_bootstrap=5)
    assert len(calls) == len(set(calls)) == 7
    empty = score_predictions(eval_set[1], preds(frozenset()))
    assert empty[0] == 0.5 and empty[1] == pytest.approx(1 / N_CLASSES)


def test_one_hot_soft_labels_fit_the_same_probe_as_hard_labels(eval_set):
    x, y = blobs(10, range(N_CLASSES), seed=50)
    hard = linear_probe_trainer({"a": x}, {"a": y}, eval_set[0], N_CLASSES)
    soft = linear_probe_trainer(
        {"a": x}, {"a": np.eye(N_CLASSES)[y]}, eval_set[0], N_CLASSES
    )
    np.testing.assert_allclose(
        hard(frozenset({"a"})), soft(frozenset({"a"})), atol=1e-6
    )


def test_unknown_sites_and_misshapen_predictions_are_refused(eval_set):
    preds = CoalitionPredictions(
        ("a",), len(eval_set[0]), N_CLASSES, lambda s: np.zeros((3, N_CLASSES))
    )
    with pytest.raises(KeyError, match="zz"):
        preds(frozenset({"zz"}))
    with pytest.raises(ValueError, match="shape"):
        preds(frozenset({"a"}))


def test_the_vectorised_scores_equal_sklearn_on_the_resampled_rows():
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    rng = np.random.default_rng(11)
    labels = rng.integers(0, N_CLASSES, 80)
    proba = rng.random((80, N_CLASSES)).round(1)  # rounded: many tied scores
    rows = rng.integers(0, 80, 80)
    counts = np.bincount(rows, minlength=80)[None, :]
    got = score_predictions(labels, proba, counts)[0]
    y, p = labels[rows], proba[rows]
    want_auc = [roc_auc_score(y == k, p[:, k]) for k in range(N_CLASSES)]
    np.testing.assert_allclose(got[2:], want_auc, atol=1e-12)
    assert got[0] == pytest.approx(np.mean(want_auc), abs=1e-12)
    assert got[1] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)), abs=1e-12)
    np.testing.assert_allclose(
        score_predictions(labels, proba),
        score_predictions(labels, proba, np.ones((1, 80)))[0],
    )
