"""What each site's generator contributed: site-alone, leave-one-out and Shapley.

Flower-free. The *value* of a coalition of sites is the downstream model
trained on that coalition's condensed data, scored on the coordinator's
held-out evaluation set. Training happens once per coalition and keeps only the
model's class probabilities on the evaluation set (:class:`CoalitionPredictions`),
so every metric, every class and every bootstrap resample re-scores stored
predictions without retraining.

Values are vectors (:data:`VALUE_NAMES`: macro AUC, balanced accuracy, then
one-vs-rest AUC per class). Shapley values are linear in the value function,
so one pass gives the per-class contributions too: "which site helps which
class".

- ``n ≤ EXACT_MAX_SITES``: exact Shapley over all 2^n coalitions.
- Beyond: truncated Monte-Carlo permutation Shapley (Ghorbani & Zou, 2019),
  with the standard error over permutations.

The empty coalition predicts the uniform distribution (AUC 0.5, balanced
accuracy 1/C): a model that has seen nothing.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

Coalition = frozenset[str]
EXACT_MAX_SITES = 8
VALUE_NAMES_HEAD = ("auc", "bal_acc")


def value_names(class_names: Sequence[str]) -> list[str]:
    """Names of the entries of a value vector: macro AUC, bal-acc, per-class AUC."""
    return [*VALUE_NAMES_HEAD, *(f"auc:{c}" for c in class_names)]


def weighted_auc(
    scores: np.ndarray, positives: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """One-vs-rest ROC AUC under each row of ``weights`` (``B × N``), ties as ½.

    A row of bootstrap counts gives the AUC of that resample (a row of ones:
    the plain AUC, as ``sklearn.metrics.roc_auc_score``). Vectorised over rows:
    sort once, sum the weights of each run of tied scores, then count the
    negatives ranked below each positive. NaN where a row has no positive or
    no negative weight.
    """
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_scores) != 0])
    w = weights[:, order]
    pos = positives[order]
    tied_pos = np.add.reduceat(w * pos, starts, axis=1)
    tied_neg = np.add.reduceat(w * ~pos, starts, axis=1)
    below = np.cumsum(tied_neg, axis=1) - tied_neg
    n_pos, n_neg = tied_pos.sum(axis=1), tied_neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (tied_pos * (below + 0.5 * tied_neg)).sum(axis=1) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), auc, np.nan)


def score_predictions(
    labels: np.ndarray, proba: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """The value vector of one coalition's predictions on the evaluation set.

    Per-class AUC is NaN where ``labels`` hold no positive or no negative of the
    class (it is undefined there); the macro AUC averages the defined ones, as
    :func:`medsynth_fl.evaluation.macro_ovr_auc` does. Balanced accuracy is
    the mean recall over the classes present. With ``weights`` (``B × N``
    bootstrap counts) it returns one vector per row, ``B × V``.
    """
    single = weights is None
    w = np.ones((1, len(labels))) if single else np.asarray(weights, dtype=np.float64)
    n_classes = proba.shape[1]
    per_class = np.stack(
        [weighted_auc(proba[:, k], labels == k, w) for k in range(n_classes)], axis=1
    )
    correct = proba.argmax(axis=1) == labels
    onehot = labels[:, None] == np.arange(n_classes)[None, :]  # N × C
    support = w @ onehot  # B × C
    hits = w @ (onehot & correct[:, None])
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no class defined
        recall = np.where(support > 0, hits / support, np.nan)
        bal_acc = np.nanmean(recall, axis=1)
        macro = np.nanmean(per_class, axis=1)
    out = np.column_stack([macro, bal_acc, per_class])
    return out[0] if single else out


@dataclass
class CoalitionPredictions:
    """Evaluation-set probabilities of the model trained on each coalition.

    ``train`` maps a non-empty coalition to an ``N × C`` probability array; it
    is called at most once per coalition (the cache). ``stored`` may be
    pre-filled from the run store, and is what a caller persists.
    """

    sites: tuple[str, ...]
    n_eval: int
    n_classes: int
    train: Callable[[Coalition], np.ndarray]
    stored: dict[Coalition, np.ndarray] = field(default_factory=dict)

    def __call__(self, coalition: Iterable[str]) -> np.ndarray:
        """Probabilities of ``coalition``'s model (uniform for the empty one)."""
        key = frozenset(coalition)
        unknown = key - set(self.sites)
        if unknown:
            raise KeyError(f"not a site of this run: {sorted(unknown)}")
        if not key:
            return np.full((self.n_eval, self.n_classes), 1.0 / self.n_classes)
        if key not in self.stored:
            proba = np.asarray(self.train(key), dtype=np.float64)
            if proba.shape != (self.n_eval, self.n_classes):
                raise ValueError(
                    f"coalition {sorted(key)}: predictions of shape {proba.shape}, "
                    f"expected {(self.n_eval, self.n_classes)}"
                )
            self.stored[key] = proba
        return self.stored[key]


ValueFn = Callable[[Coalition], np.ndarray]


def exact_shapley(sites: Sequence[str], value: ValueFn) -> dict[str, np.ndarray]:
    """Exact Shapley values over ``sites`` (2^n coalitions, each valued once).

    φ_i = Σ_{S ⊆ N∖{i}} |S|! (n−|S|−1)! / n! · (v(S ∪ {i}) − v(S)).
    """
    n = len(sites)
    values = {
        frozenset(c): np.asarray(value(frozenset(c)), dtype=np.float64)
        for r in range(n + 1)
        for c in itertools.combinations(sites, r)
    }
    out = {}
    for site in sites:
        others = [s for s in sites if s != site]
        total = np.zeros_like(values[frozenset()])
        for r in range(n):
            weight = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
            for c in itertools.combinations(others, r):
                s = frozenset(c)
                total = total + weight * (values[s | {site}] - values[s])
        out[site] = total
    return out


@dataclass(frozen=True)
class MonteCarloShapley:
    """Permutation-sampled Shapley values with their standard errors."""

    mean: dict[str, np.ndarray]
    stderr: dict[str, np.ndarray]
    n_permutations: int
    coalitions_valued: int


def permutations(sites: Sequence[str], n: int, seed: int) -> list[tuple[str, ...]]:
    """``n`` seeded random orderings of ``sites`` (bootstrap re-scores reuse them)."""
    rng = np.random.default_rng(seed)
    return [tuple(sites[i] for i in rng.permutation(len(sites))) for _ in range(n)]


def monte_carlo_shapley(
    sites: Sequence[str],
    value: ValueFn,
    orderings: Sequence[tuple[str, ...]],
    truncation_tol: float = 0.0,
    headline: int = 0,
) -> MonteCarloShapley:
    """Truncated Monte-Carlo permutation Shapley (TMC-Shapley).

    Each ordering adds the sites one by one; a site's marginal contribution is
    the change in value it brings. Once a prefix's headline value (entry
    ``headline``) is within ``truncation_tol`` of the grand coalition's, the
    remaining sites of that ordering get 0 and no more models are trained for
    it. ``truncation_tol=0`` is the unbiased, untruncated estimator.
    """
    grand = np.asarray(value(frozenset(sites)), dtype=np.float64)
    marginals: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    valued: set[Coalition] = {frozenset(sites)}
    for order in orderings:
        prefix: Coalition = frozenset()
        previous = np.asarray(value(prefix), dtype=np.float64)
        truncated = False
        for site in order:
            if truncated:
                marginals[site].append(np.zeros_like(grand))
                continue
            prefix = prefix | {site}
            current = np.asarray(value(prefix), dtype=np.float64)
            valued.add(prefix)
            marginals[site].append(current - previous)
            previous = current
            gap = (
                np.atleast_2d(grand)[0, headline] - np.atleast_2d(current)[0, headline]
            )
            if truncation_tol > 0 and abs(gap) < truncation_tol:
                truncated = True  # decided on the point value, for every row
    k = len(orderings)
    mean = {s: np.mean(m, axis=0) for s, m in marginals.items()}
    stderr = {
        s: (
            np.std(m, axis=0, ddof=1) / math.sqrt(k)
            if k > 1
            else np.full_like(grand, np.inf)
        )
        for s, m in marginals.items()
    }
    return MonteCarloShapley(mean, stderr, k, len(valued))


def leave_one_out(sites: Sequence[str], value: ValueFn) -> dict[str, np.ndarray]:
    """v(all) − v(all without the site): what the federation loses without it."""
    grand = np.asarray(value(frozenset(sites)), dtype=np.float64)
    return {s: grand - value(frozenset(sites) - {s}) for s in sites}


def site_alone(sites: Sequence[str], value: ValueFn) -> dict[str, np.ndarray]:
    """v({site}): the downstream model trained on that site's data only."""
    return {s: np.asarray(value(frozenset({s})), dtype=np.float64) for s in sites}


@dataclass(frozen=True)
class Estimate:
    """A point value with its percentile-bootstrap interval (eval set resampled)."""

    mean: float
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, float]:
        """JSON form: ``{mean, ci_low, ci_high}``."""
        return {"mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high}


@dataclass(frozen=True)
class SiteContribution:
    """One site's contributions, each a vector over :func:`value_names`."""

    site: str
    shapley: list[Estimate]
    loo: list[Estimate]
    alone: list[Estimate]
    shapley_stderr: list[float] | None  # Monte-Carlo only


@dataclass(frozen=True)
class Contributions:
    """Every site's contributions and the values they decompose."""

    names: list[str]
    sites: dict[str, SiteContribution]
    grand_value: list[float]
    empty_value: list[float]
    method: str  # "exact" or "monte_carlo"
    coalitions_trained: int
    n_bootstrap: int

    def as_dict(self, entry: str = "auc") -> dict:
        """JSON form of one value entry (default macro AUC) for every site."""
        j = self.names.index(entry)
        return {
            "value": entry,
            "method": self.method,
            "v_all": self.grand_value[j],
            "v_empty": self.empty_value[j],
            "coalitions_trained": self.coalitions_trained,
            "n_bootstrap": self.n_bootstrap,
            "sites": {
                s: {
                    "shapley": c.shapley[j].as_dict(),
                    "loo": c.loo[j].as_dict(),
                    "alone": c.alone[j].as_dict(),
                    **(
                        {"shapley_stderr": c.shapley_stderr[j]}
                        if c.shapley_stderr is not None
                        else {}
                    ),
                }
                for s, c in self.sites.items()
            },
        }

    def as_record(self) -> dict:
        """JSON form for the run store: macro AUC, bal-acc, per-class Shapley.

        NaN (the AUC of a class without test positives) is written as null.
        """
        classes = [n.removeprefix("auc:") for n in self.names if n.startswith("auc:")]
        return _json_safe(
            {
                "class_names": classes,
                "auc": self.as_dict("auc"),
                "bal_acc": self.as_dict("bal_acc"),
                "per_class_shapley": self.per_class_shapley(),
            }
        )

    def per_class_shapley(self) -> dict[str, dict[str, float]]:
        """Map site → class → Shapley value of that class's one-vs-rest AUC."""
        classes = [n.removeprefix("auc:") for n in self.names if n.startswith("auc:")]
        offset = len(VALUE_NAMES_HEAD)
        return {
            s: {c: c_.shapley[offset + k].mean for k, c in enumerate(classes)}
            for s, c_ in self.sites.items()
        }


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def compute_contributions(
    predictions: CoalitionPredictions,
    labels: np.ndarray,
    class_names: Sequence[str],
    n_bootstrap: int = 200,
    level: float = 0.95,
    seed: int = 0,
    n_permutations: int = 200,
    truncation_tol: float = 0.0,
) -> Contributions:
    """Site-alone, leave-one-out and Shapley values with bootstrap intervals.

    Exact Shapley for up to :data:`EXACT_MAX_SITES` sites, Monte-Carlo beyond.
    The intervals resample the evaluation set (rows, with replacement) and
    re-score the stored predictions of every coalition: they show how much the
    figure depends on which patients the coordinator happened to hold out. The
    model-training noise is not in them (one model per coalition).
    """
    labels = np.asarray(labels)
    sites = list(predictions.sites)
    names = value_names(class_names)
    exact = len(sites) <= EXACT_MAX_SITES
    # row 0 weighs every test image once (the point value); rows 1.. are
    # bootstrap resamples as counts, so each coalition is scored in one pass
    rng = np.random.default_rng(seed)
    counts = np.vstack(
        [
            np.ones(len(labels)),
            *(
                np.bincount(
                    rng.integers(0, len(labels), len(labels)), minlength=len(labels)
                )
                for _ in range(n_bootstrap)
            ),
        ]
    )
    scored: dict[Coalition, np.ndarray] = {}

    def value(coalition: Coalition) -> np.ndarray:  # (1 + B) × V
        if coalition not in scored:
            scored[coalition] = score_predictions(
                labels, predictions(coalition), counts
            )
        return scored[coalition]

    if exact:
        shap, stderr = exact_shapley(sites, value), None
    else:
        mc = monte_carlo_shapley(
            sites, value, permutations(sites, n_permutations, seed), truncation_tol
        )
        shap, stderr = mc.mean, {s: e[0] for s, e in mc.stderr.items()}
    loo, alone = leave_one_out(sites, value), site_alone(sites, value)
    q = ((1 - level) / 2, (1 + level) / 2)

    def estimates(rows: np.ndarray) -> list[Estimate]:
        point, boots = rows[0], rows[1:]
        if len(boots) == 0:
            return [Estimate(float(p), float(p), float(p)) for p in point]
        with warnings.catch_warnings():  # an all-NaN column: a class never tested
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanquantile(boots, q, axis=0)
        return [
            Estimate(float(p), float(a), float(b))
            for p, a, b in zip(point, lo, hi, strict=True)
        ]

    return Contributions(
        names=names,
        sites={
            s: SiteContribution(
                site=s,
                shapley=estimates(shap[s]),
                loo=estimates(loo[s]),
                alone=estimates(alone[s]),
                shapley_stderr=None
                if stderr is None
                else [float(x) for x in stderr[s]],
            )
            for s in sites
        },
        grand_value=[float(x) for x in value(frozenset(sites))[0]],
        empty_value=[float(x) for x in value(frozenset())[0]],
        method="exact" if exact else "monte_carlo",
        coalitions_trained=len(predictions.stored),
        n_bootstrap=n_bootstrap,
    )


def linear_probe_trainer(
    site_features: dict[str, np.ndarray],
    site_targets: dict[str, np.ndarray],
    eval_features: np.ndarray,
    n_classes: int,
    max_iter: int = 300,
    c: float = 1.0,
) -> Callable[[Coalition], np.ndarray]:
    """The cheap value function: a multinomial logistic probe on frozen features.

    ``site_targets`` are hard labels (``N``) or soft labels (``N × C``, rows sum
    to 1). Soft labels are fitted as the expected log-loss: each sample appears
    once per class with the class probability as its weight, which is exactly
    the cross-entropy against the soft target. Classes no site in the
    coalition holds get probability 0 (AUC 0.5 for them).
    """
    mean = eval_features.mean(axis=0)
    scale = eval_features.std(axis=0) + 1e-6

    def expand(
        x: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if t.ndim == 1:
            return x, t.astype(int), np.ones(len(t))
        rows, cols = np.nonzero(t > 1e-4)
        return x[rows], cols, t[rows, cols]

    def train(coalition: Coalition) -> np.ndarray:
        parts = [expand(site_features[s], site_targets[s]) for s in sorted(coalition)]
        x = (np.concatenate([p[0] for p in parts]) - mean) / scale
        y = np.concatenate([p[1] for p in parts])
        w = np.concatenate([p[2] for p in parts])
        proba = np.zeros((len(eval_features), n_classes))
        seen = np.unique(y)
        if len(seen) == 1:  # one class only: the probe can say nothing else
            proba[:, seen[0]] = 1.0
            return proba
        probe = LogisticRegression(C=c, max_iter=max_iter)
        with warnings.catch_warnings():
            # a probe stopped at max_iter is still one fixed, deterministic
            # value function; the warning would repeat for each of 2^n fits
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(x, y, sample_weight=w)
        proba[:, probe.classes_] = probe.predict_proba((eval_features - mean) / scale)
        return proba

    return train
