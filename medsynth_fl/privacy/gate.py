"""The release gate: whether an audited generator may leave its site, and why not.

A generator is refused when an attack's AUC exceeds the limit, or its 95 %
interval lies wholly on the far side of chance, or (optionally) its TPR at 1 %
FPR exceeds a limit beyond chance. Each refusal names the attack and figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .audit import AuditReport
from .metrics import AttackResult


@dataclass(frozen=True)
class GateDecision:
    """Whether a generator may be released, and why not.

    Attributes
    ----------
    allowed : True when no attack's AUC exceeds the limit.
    reasons : one line per attack over the limit (empty when allowed).
    notes : what a reviewer should know but does not block release: each
        attack whose null control (two halves of the non-members) is off
        chance, i.e. an audit whose figures the noise alone can explain.
    """

    allowed: bool
    reasons: list[str]
    notes: list[str] = field(default_factory=list)


def auc_leaks(
    auc: float, max_auc: float, interval: tuple[float, float] | None = None
) -> bool:
    """Whether an attack's AUC counts as a leak.

    Above ``max_auc``: the attack ranks members first. Or, given the AUC's 95 %
    bootstrap interval, an interval wholly below ``1 − max_auc``: the attack
    ranks members last beyond chance, and flipping its sign gives an attack
    above ``max_auc``. The lower side needs the interval because a small
    non-member set puts an attack far below 0.5 by chance (docs/decisions.md);
    without one only the upper side is tested. ``max_auc`` is in [0.5, 1]:
    ``AuditConfig`` and :func:`release_gate` check it.
    """
    if auc > max_auc:
        return True
    return interval is not None and interval[1] < 1.0 - max_auc


def tpr_leaks(interval: tuple[float, float] | None, max_tpr: float | None) -> bool:
    """Whether an attack's TPR at 1 % FPR exceeds ``max_tpr`` beyond chance.

    The whole 95 % interval must lie above the limit: at 1 % FPR the threshold
    rests on the top 1 % of the non-members, a handful of images on a small
    site, so the point estimate alone would refuse generators by chance.
    ``max_tpr=None`` (the default) turns the test off; so does a missing interval.
    """
    return max_tpr is not None and interval is not None and interval[0] > max_tpr


def _tpr_reason(name: str, r: AttackResult, max_tpr: float) -> str:
    """Why an attack that :func:`tpr_leaks` flagged leaks, for the gate's reasons."""
    low, high = r.tpr_at_1pct_fpr_ci
    return (
        f"{name}: TPR@1%FPR {r.tpr_at_1pct_fpr:.3f}, 95 % interval "
        f"[{low:.3f}, {high:.3f}] above {max_tpr:.3f}"
    )


def _leak_reason(name: str, r: AttackResult, max_auc: float) -> str:
    """Why an attack that :func:`auc_leaks` flagged leaks, for the gate's reasons."""
    if r.auc > max_auc:
        return f"{name}: AUC {r.auc:.3f} > {max_auc:.3f}"
    low, high = r.auc_ci
    return (
        f"{name}: AUC {r.auc:.3f}, 95 % interval [{low:.3f}, {high:.3f}] below "
        f"{1.0 - max_auc:.3f} (members ranked last beyond chance)"
    )


def gate_limits(max_auc: float, max_tpr: float | None = None) -> str:
    """The gate's limits in words, for refusal messages and reports."""
    text = f"AUC limit {max_auc}, two-sided beyond chance"
    if max_tpr is not None:
        text += f"; TPR@1%FPR limit {max_tpr} beyond chance"
    return text


def release_gate(
    report: AuditReport, max_auc: float = 0.60, max_tpr: float | None = None
) -> GateDecision:
    """Refuse release when any attack's AUC leaks (:func:`auc_leaks`) or its TPR does.

    Parameters
    ----------
    report : the audit report.
    max_auc : the largest AUC tolerated (``AuditConfig.max_auc``), in [0.5, 1].
    max_tpr : the largest TPR at 1 % FPR tolerated beyond chance
        (``AuditConfig.max_tpr_at_1pct_fpr``, :func:`tpr_leaks`); None: not tested.

    Returns
    -------
    GateDecision
        ``allowed`` and the reasons for a refusal, naming each attack.
    """
    if not 0.5 <= max_auc <= 1.0:
        raise ValueError(f"max_auc must be in [0.5, 1], got {max_auc}")
    if not report.results:
        raise ValueError("the report has no attack results")
    reasons = []
    for name, r in sorted(report.results.items()):
        if auc_leaks(r.auc, max_auc, r.auc_ci):
            reasons.append(_leak_reason(name, r, max_auc))
        if tpr_leaks(r.tpr_at_1pct_fpr_ci, max_tpr):
            reasons.append(_tpr_reason(name, r, max_tpr))
    notes = [
        f"{name}: null control AUC {c.auc:.3f} [{c.auc_ci[0]:.3f}, {c.auc_ci[1]:.3f}] "
        "excludes chance (two halves of the non-members told apart): the audit's "
        "candidates are not exchangeable"
        for name, c in sorted(report.null_control.items())
        if c.auc_ci is not None and not c.auc_ci[0] <= 0.5 <= c.auc_ci[1]
    ]
    return GateDecision(allowed=not reasons, reasons=reasons, notes=notes)
