"""Membership-inference metrics: Algorithm-1 accuracy, AUC, TPR at low FPR, P1(D).

Every attack hands over two score arrays, one for members and one for
non-members, where a **larger score means "member"**. This module turns them
into one :class:`AttackResult`; it never looks at images or models.

A TPR at 1 % FPR measured on a few hundred non-members rests on two or three
of them, so every result carries bootstrap confidence intervals too: a figure
that misses a target by less than its own interval is not evidence of a leak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import bootstrap
from sklearn.metrics import roc_auc_score, roc_curve

Interval = tuple[float, float]


@dataclass(frozen=True)
class AttackResult:
    """How well one attack separates members from non-members.

    Attributes
    ----------
    name : attack name, e.g. ``"logan_wb"``.
    acc : Algorithm-1 accuracy (seed 004): the fraction of the top-N scores that
        are members, on N members and N non-members; 0.5 is chance.
    auc : area under the ROC curve; 0.5 is chance.
    tpr_at_1pct_fpr : best true-positive rate among ROC points with FPR ≤ 1 %.
    tpr_at_0_1pct_fpr : best true-positive rate among ROC points with FPR ≤ 0.1 %.
    fpr, tpr : the ROC points (scikit-learn's ``roc_curve``).
    n_members, n_nonmembers : number of scores on each side.
    auc_ci, tpr_at_1pct_fpr_ci, tpr_at_0_1pct_fpr_ci : 95 % bootstrap
        intervals (:func:`bootstrap_intervals`); None when not computed.
    """

    name: str
    acc: float
    auc: float
    tpr_at_1pct_fpr: float
    tpr_at_0_1pct_fpr: float
    fpr: np.ndarray
    tpr: np.ndarray
    n_members: int
    n_nonmembers: int
    auc_ci: Interval | None = None
    tpr_at_1pct_fpr_ci: Interval | None = None
    tpr_at_0_1pct_fpr_ci: Interval | None = None


def _check_scores(scores: np.ndarray, side: str) -> np.ndarray:
    """Validate one side's scores: a non-empty, finite 1-D array."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"{side} scores must be a non-empty 1-D array")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{side} scores contain NaN or infinity")
    return scores


def balanced_subsample(
    member_scores: np.ndarray, nonmember_scores: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the larger side to the size N of the smaller one.

    The kept indices are a fixed-seed random choice without replacement, so the
    result is deterministic and does not depend on the order of the candidates
    (taking the first N would favour whatever the caller sorted first).

    Parameters
    ----------
    member_scores, nonmember_scores : scores of each side.
    seed : seed of the choice.

    Returns
    -------
    tuple of np.ndarray
        Member and non-member scores, both of length N.
    """
    n = min(len(member_scores), len(nonmember_scores))
    rng = np.random.default_rng(seed)

    def keep(scores: np.ndarray) -> np.ndarray:
        if len(scores) == n:
            return scores
        return scores[np.sort(rng.choice(len(scores), size=n, replace=False))]

    return keep(member_scores), keep(nonmember_scores)


def algorithm1_accuracy(
    member_scores: np.ndarray, nonmember_scores: np.ndarray
) -> float:
    """Membership-attack accuracy of Algorithm 1 (seed 004, after LOGAN).

    The 2N candidates are ranked by score and the top N are called members; the
    accuracy is the fraction of those N that are members. Tied scores at the
    cut are shared in proportion (the expectation under random tie-breaking),
    so a constant score gives exactly 0.5 whatever the order of the inputs.

    Parameters
    ----------
    member_scores, nonmember_scores : N scores each; larger means "member".

    Returns
    -------
    float
        Accuracy in [0, 1]; 0.5 is chance.
    """
    if len(member_scores) != len(nonmember_scores):
        raise ValueError("Algorithm 1 needs as many members as non-members")
    n = len(member_scores)
    scores = np.concatenate([member_scores, nonmember_scores])
    is_member = np.arange(2 * n) < n
    cut = np.sort(scores)[::-1][n - 1]  # the N-th largest score
    above, tied = scores > cut, scores == cut
    members_in_top = is_member[above].sum() + (n - above.sum()) * (
        is_member[tied].sum() / tied.sum()
    )
    return float(members_in_top / n)


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Best TPR among the ROC points whose FPR is at most ``target``.

    Parameters
    ----------
    fpr, tpr : ROC points, as returned by ``sklearn.metrics.roc_curve``.
    target : the largest false-positive rate allowed, in [0, 1].

    Returns
    -------
    float
        The TPR (0.0 when no point qualifies).
    """
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"target FPR must be in [0, 1], got {target}")
    ok = fpr <= target
    return float(tpr[ok].max()) if ok.any() else 0.0


def rank_metrics(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> np.ndarray:
    """AUC, TPR at 1 % FPR and TPR at 0.1 % FPR from ranks alone.

    The same values as ``roc_auc_score`` and :func:`tpr_at_fpr` on
    ``roc_curve`` (a test checks it, ties included), in one sort instead of a
    full ROC: the bootstrap calls this a thousand times per attack. AUC is the
    Mann-Whitney statistic (ties count half). The best TPR at FPR ≤ t flags
    the members scoring strictly above the (k+1)-th largest non-member score,
    k = ⌊t·M⌋ being the most non-members the threshold may let through.

    Parameters
    ----------
    member_scores, nonmember_scores : scores of each side; larger = member.

    Returns
    -------
    np.ndarray
        ``[auc, tpr_at_1pct_fpr, tpr_at_0_1pct_fpr]``.
    """
    nonmembers = np.sort(nonmember_scores)
    below = np.searchsorted(nonmembers, member_scores, side="left")
    tied = np.searchsorted(nonmembers, member_scores, side="right") - below
    auc = (below + 0.5 * tied).sum() / (len(member_scores) * len(nonmembers))

    def tpr_at(target: float) -> float:
        allowed = int(np.floor(target * len(nonmembers) + 1e-9))
        if allowed >= len(nonmembers):
            return 1.0
        return float(np.mean(member_scores > nonmembers[-1 - allowed]))

    return np.array([auc, tpr_at(0.01), tpr_at(0.001)])


RANK_METRICS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr")  # rank_metrics' order


def null_roc_band(
    n_members: int,
    n_nonmembers: int,
    fprs: np.ndarray,
    n_sim: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Where an attack that knows nothing lands: the chance band of an ROC curve.

    Members and non-members get exchangeable scores (the null hypothesis); for
    each simulated audit of this size, the best TPR at FPR ≤ each of ``fprs``
    is read as :func:`rank_metrics` reads it. Returns the ``level`` percentile
    band (low, high) per FPR. With a few hundred non-members the band at 1 %
    FPR is wide: a curve inside it shows no leak at that sample size.
    """
    fprs = np.asarray(fprs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    allowed = np.floor(fprs * n_nonmembers + 1e-9).astype(int)
    tprs = np.empty((n_sim, len(fprs)))
    for i in range(n_sim):
        members = rng.random(n_members)
        nonmembers = np.sort(rng.random(n_nonmembers))
        cut = nonmembers[np.clip(n_nonmembers - 1 - allowed, 0, None)]
        tprs[i] = np.where(
            allowed >= n_nonmembers, 1.0, (members[None, :] > cut[:, None]).mean(1)
        )
    q = ((1 - level) / 2, (1 + level) / 2)
    low, high = np.quantile(tprs, q, axis=0)
    return low, high


@dataclass(frozen=True)
class ChanceLevel:
    """One metric's largest value over every attack, against chance.

    Chance is the same audit with the membership labels permuted among the
    candidates (every attack under the same permutation, so their correlation
    is kept). The maximum over attacks is what a target such as "every attack
    at TPR ≤ 2 %" tests, and with a few hundred non-members that maximum is
    well above the single-attack chance level even for a generator that
    leaks nothing.

    Attributes
    ----------
    metric : ``"auc"``, ``"tpr_at_1pct_fpr"`` or ``"tpr_at_0_1pct_fpr"``.
    observed_max : the largest value over the attacks.
    null_mean_max, null_q95_max : mean and 95th percentile of that maximum
        under permuted labels.
    p_value : family-wise p-value of ``observed_max`` (share of permutations
        whose maximum reaches it, +1 smoothed).
    adjusted_p : attack → its value's family-wise adjusted p-value
        (Westfall-Young single step: the same share, for that attack's value).
    n_permutations : permutations drawn.
    """

    metric: str
    observed_max: float
    null_mean_max: float
    null_q95_max: float
    p_value: float
    adjusted_p: dict[str, float]
    n_permutations: int


def masked_rank_metrics(scores: np.ndarray, members: np.ndarray) -> np.ndarray:
    """:func:`rank_metrics` for many member/non-member splits of one score array.

    Permutations change only which candidates are members, so the ranks and
    the descending order of the scores are computed once and each split is a
    row of ``members`` (bool, ``[splits, len(scores)]``). Equal to calling
    :func:`rank_metrics` per row (a test checks it, ties included), ~50×
    faster for a thousand splits.

    Returns
    -------
    np.ndarray
        ``[splits, 3]``: AUC, TPR at 1 % FPR and TPR at 0.1 % FPR per split.
    """
    from scipy.stats import rankdata

    n_members = int(members[0].sum())
    n_nonmembers = len(scores) - n_members
    ranks = rankdata(scores)  # ties get their mean rank: they count half
    auc = (members @ ranks - n_members * (n_members + 1) / 2) / (
        n_members * n_nonmembers
    )
    order = np.argsort(-scores, kind="stable")
    desc = scores[order]
    in_order = members[:, order]
    members_before = np.cumsum(in_order, axis=1)  # members at positions ≤ j
    nonmembers_before = np.cumsum(~in_order, axis=1)
    # first position of each score's tie group: members strictly above it
    first_of_tie = np.searchsorted(-desc, -desc, side="left")

    def tpr_at(target: float) -> np.ndarray:
        allowed = int(np.floor(target * n_nonmembers + 1e-9))
        if allowed >= n_nonmembers:
            return np.ones(len(members))
        # position of the (allowed+1)-th largest non-member score
        pos = np.argmax(nonmembers_before >= allowed + 1, axis=1)
        start = first_of_tie[pos]
        above = np.where(
            start > 0,
            members_before[np.arange(len(members)), np.maximum(start - 1, 0)],
            0,
        )
        return above / n_members

    return np.stack([auc, tpr_at(0.01), tpr_at(0.001)], axis=1)


def permutation_chance(
    scores: dict[str, np.ndarray],
    n_members: int,
    n_permutations: int = 1000,
    seed: int = 0,
) -> dict[str, ChanceLevel]:
    """Chance levels of every metric's maximum over attacks (see :class:`ChanceLevel`).

    Parameters
    ----------
    scores : attack name → scores of every candidate, the ``n_members``
        members first, then the non-members (larger = member).
    n_members : how many of the candidates are members.
    n_permutations : label permutations of the null distribution.
    seed : seed of the permutations.

    Returns
    -------
    dict of str to ChanceLevel
        One entry per metric of :data:`RANK_METRICS`.
    """
    names = sorted(scores)
    if not names:
        raise ValueError("no attack scores to compare with chance")
    stacked = np.stack([_check_scores(scores[n], n) for n in names])
    total = stacked.shape[1]
    if not 0 < n_members < total:
        raise ValueError("need at least one member and one non-member")
    if n_permutations < 1:
        raise ValueError("n_permutations must be at least 1")

    observed = np.stack([rank_metrics(r[:n_members], r[n_members:]) for r in stacked])
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_permutations, total), dtype=bool)  # True: member
    for i in range(n_permutations):
        masks[i, rng.permutation(total)[:n_members]] = True
    null_max = np.max([masked_rank_metrics(row, masks) for row in stacked], axis=0)

    def p_of(value: float, j: int) -> float:
        return float(
            (1 + np.sum(null_max[:, j] >= value - 1e-12)) / (n_permutations + 1)
        )

    return {
        metric: ChanceLevel(
            metric=metric,
            observed_max=float(observed[:, j].max()),
            null_mean_max=float(null_max[:, j].mean()),
            null_q95_max=float(np.quantile(null_max[:, j], 0.95)),
            p_value=p_of(observed[:, j].max(), j),
            adjusted_p={n: p_of(observed[a, j], j) for a, n in enumerate(names)},
            n_permutations=n_permutations,
        )
        for j, metric in enumerate(RANK_METRICS)
    }


def bootstrap_intervals(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[Interval, Interval, Interval]:
    """Percentile-bootstrap intervals of AUC, TPR@1 %FPR and TPR@0.1 %FPR.

    Members and non-members are resampled separately (scipy's two-sample
    bootstrap), as they were drawn separately. The percentile method rather
    than BCa: BCa is undefined when every resample gives the same value, which
    a perfectly separated positive control does.

    Parameters
    ----------
    member_scores, nonmember_scores : scores of each side; larger = member.
    n_resamples : bootstrap resamples.
    level : confidence level of the intervals.
    seed : seed of the resampling.

    Returns
    -------
    tuple of (low, high)
        One interval per metric, in the order of :func:`rank_metrics`.
    """
    ci = bootstrap(
        (member_scores, nonmember_scores),
        rank_metrics,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=False,
        paired=False,
        rng=np.random.default_rng(seed),
    ).confidence_interval
    pairs = zip(ci.low, ci.high, strict=True)
    auc, tpr1, tpr01 = ((float(lo), float(hi)) for lo, hi in pairs)
    return auc, tpr1, tpr01


def evaluate_attack(
    name: str,
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    seed: int = 0,
    n_bootstrap: int = 1000,
) -> AttackResult:
    """Evaluate one membership attack from its scores (larger = member).

    AUC and the ROC use every score. Algorithm-1 accuracy needs N members and
    N non-members: with unequal sides the larger one is subsampled first
    (:func:`balanced_subsample`).

    Parameters
    ----------
    name : attack name stored in the result.
    member_scores : scores of the training images (members).
    nonmember_scores : scores of held-out images (non-members).
    seed : seed of the balanced subsample and of the bootstrap.
    n_bootstrap : bootstrap resamples of the 95 % intervals; 0 skips them, as
        does a side with fewer than two scores.

    Returns
    -------
    AttackResult
        Accuracy, AUC, TPR at 1 % and 0.1 % FPR, their intervals, the ROC.
    """
    members = _check_scores(member_scores, "member")
    nonmembers = _check_scores(nonmember_scores, "non-member")
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    s = np.concatenate([members, nonmembers])
    fpr, tpr, _ = roc_curve(y, s)
    resamplable = min(len(members), len(nonmembers)) >= 2
    intervals = (
        bootstrap_intervals(members, nonmembers, n_bootstrap, seed=seed)
        if n_bootstrap > 0 and resamplable
        else (None, None, None)
    )
    return AttackResult(
        name=name,
        acc=algorithm1_accuracy(*balanced_subsample(members, nonmembers, seed)),
        auc=float(roc_auc_score(y, s)),
        tpr_at_1pct_fpr=tpr_at_fpr(fpr, tpr, 0.01),
        tpr_at_0_1pct_fpr=tpr_at_fpr(fpr, tpr, 0.001),
        fpr=fpr,
        tpr=tpr,
        n_members=len(members),
        n_nonmembers=len(nonmembers),
        auc_ci=intervals[0],
        tpr_at_1pct_fpr_ci=intervals[1],
        tpr_at_0_1pct_fpr_ci=intervals[2],
    )


def p1d(task_accuracy: float, attack_accuracy: float) -> float:
    """P1(D) of seed 001: harmonic mean of task accuracy and attack error rate.

    ``P1 = 2·a·e / (a + e)`` with ``a`` the task accuracy and ``e = 1 − attack
    accuracy``; like F1, it is high only when both are high (0 when both are 0).

    Parameters
    ----------
    task_accuracy : accuracy of the downstream (defended) model, in [0, 1].
    attack_accuracy : accuracy of the membership attack, in [0, 1].

    Returns
    -------
    float
        P1(D) in [0, 1].
    """
    for label, value in (("task", task_accuracy), ("attack", attack_accuracy)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{label} accuracy must be in [0, 1], got {value}")
    error = 1.0 - attack_accuracy
    total = task_accuracy + error
    return 0.0 if total == 0 else 2.0 * task_accuracy * error / total


def null_control(
    name: str, nonmember_scores: np.ndarray, seed: int = 0, n_bootstrap: int = 1000
) -> AttackResult:
    """The attack scored on two disjoint halves of the non-members: it must read chance.

    Neither half was trained on, so any distance of this AUC from 0.5 is what
    sampling noise alone does to an AUC at this audit's size (and a sign of a
    broken audit if its interval excludes 0.5). The halves are a seeded random
    split, the first half playing "members".
    """
    scores = np.asarray(nonmember_scores, dtype=np.float64)
    if len(scores) < 4:
        raise ValueError("the null control needs at least 4 non-member scores")
    order = np.random.default_rng(seed).permutation(len(scores))
    half = len(scores) // 2
    return evaluate_attack(
        name,
        scores[order[:half]],
        scores[order[half : 2 * half]],
        seed=seed,
        n_bootstrap=n_bootstrap,
    )
