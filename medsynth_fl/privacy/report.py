"""Render an audit: JSON (plain floats, never NaN), flat metric names, ROC plots.

ROC curves are drawn as ML Privacy Meter and LiRA draw them: log-log axes,
so the low-FPR regime that matters for membership inference is visible, with
the chance diagonal. Plots use matplotlib's Agg canvas directly (no pyplot
state), so they work headless and from several threads.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .audit import AuditReport
from .gate import GateDecision, auc_leaks, tpr_leaks
from .metrics import AttackResult, ChanceLevel, null_roc_band, tpr_at_fpr

SUMMARY_FIELDS = {
    "acc": "acc",
    "auc": "auc",
    "tpr_at_1pct_fpr": "tpr@1fpr",
    "tpr_at_0_1pct_fpr": "tpr@0.1fpr",
}
# The ROC curve travels as the best TPR at these FPRs (log-spaced: the low-FPR
# regime is where membership inference matters), enough to draw it log-log.
ROC_FPR_GRID = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
ROC_METRIC_SUFFIXES = tuple(f"/roc/tpr@{f:g}" for f in ROC_FPR_GRID)
SIZE_FIELDS = {"n_members": "members", "n_nonmembers": "nonmembers"}
# The 95 % bootstrap interval of each summary metric that has one.
INTERVAL_FIELDS = {
    "auc_ci": "auc",
    "tpr_at_1pct_fpr_ci": "tpr_at_1pct_fpr",
    "tpr_at_0_1pct_fpr_ci": "tpr_at_0_1pct_fpr",
}


def _plain(value: float | None) -> float | None:
    """Convert to a plain float; None for a missing or non-finite value."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _curve(values: np.ndarray) -> list[float | None]:
    """ROC coordinates as plain floats."""
    return [_plain(v) for v in np.asarray(values, dtype=np.float64)]


def result_to_dict(result: AttackResult, include_roc: bool = True) -> dict[str, Any]:
    """One attack's result as JSON-able plain values.

    Parameters
    ----------
    result : the attack result.
    include_roc : also write the ROC points (``fpr``, ``tpr``).

    Returns
    -------
    dict
        Name, sizes, summary metrics, their 95 % intervals as ``ci95``
        (``{metric: [low, high]}``, when computed) and optionally the ROC.
    """
    out: dict[str, Any] = {
        "name": result.name,
        "n_members": int(result.n_members),
        "n_nonmembers": int(result.n_nonmembers),
    }
    out |= {f: _plain(getattr(result, f)) for f in SUMMARY_FIELDS}
    intervals = {
        metric: [_plain(bound) for bound in interval]
        for field, metric in INTERVAL_FIELDS.items()
        if (interval := getattr(result, field)) is not None
    }
    if intervals:
        out["ci95"] = intervals
    if include_roc:
        out["roc"] = {"fpr": _curve(result.fpr), "tpr": _curve(result.tpr)}
    return out


def chance_to_dict(chance: ChanceLevel) -> dict[str, Any]:
    """One metric's comparison with chance as JSON-able plain values."""
    return {
        "observed_max": _plain(chance.observed_max),
        "null_mean_max": _plain(chance.null_mean_max),
        "null_q95_max": _plain(chance.null_q95_max),
        "p_value": _plain(chance.p_value),
        "adjusted_p": {k: _plain(v) for k, v in sorted(chance.adjusted_p.items())},
        "n_permutations": chance.n_permutations,
    }


def report_to_dict(
    report: AuditReport, gate: GateDecision | None = None, include_roc: bool = True
) -> dict[str, Any]:
    """Convert the whole audit to JSON-able plain values (non-finite → null).

    Parameters
    ----------
    report : the audit report.
    gate : the release decision, when one was taken.
    include_roc : also write each attack's ROC points.

    Returns
    -------
    dict
        ``attacks``, ``memorization``, ``memorization_threshold``,
        ``task_accuracy``, ``p1d``, ``chance``, ``null_control`` and, with a
        gate, ``gate``.
    """
    out: dict[str, Any] = {
        "attacks": {
            name: result_to_dict(r, include_roc) for name, r in report.results.items()
        },
        "memorization": {k: _plain(v) for k, v in report.memorization.items()},
        "memorization_threshold": {
            k: _plain(v) for k, v in report.memorization_threshold.items()
        },
        "task_accuracy": _plain(report.task_accuracy),
        "p1d": {k: _plain(v) for k, v in report.p1d.items()},
        "chance": {k: chance_to_dict(c) for k, c in report.chance.items()},
        "null_control": {
            name: result_to_dict(r, include_roc=False)
            for name, r in report.null_control.items()
        },
    }
    if gate is not None:
        out["gate"] = {
            "allowed": gate.allowed,
            "reasons": list(gate.reasons),
            "notes": list(gate.notes),
        }
    return out


def audit_metrics(report: AuditReport) -> dict[str, float]:
    """Flat, hierarchical metric names, e.g. ``audit/logan_wb/tpr@1fpr``.

    Parameters
    ----------
    report : the audit report.

    Returns
    -------
    dict of str to float
        Finite metrics only (a Flower ``MetricRecord`` or a logger takes them).
    """
    metrics: dict[str, float | None] = {}
    for name, r in report.results.items():
        for field_name, short in SUMMARY_FIELDS.items():
            metrics[f"audit/{name}/{short}"] = _plain(getattr(r, field_name))
        for field_name, metric in INTERVAL_FIELDS.items():
            if (interval := getattr(r, field_name)) is not None:
                short = SUMMARY_FIELDS[metric]
                metrics[f"audit/{name}/{short}_ci95_low"] = _plain(interval[0])
                metrics[f"audit/{name}/{short}_ci95_high"] = _plain(interval[1])
        for field_name, short in SIZE_FIELDS.items():
            metrics[f"audit/{name}/{short}"] = float(getattr(r, field_name))
        for fpr, suffix in zip(ROC_FPR_GRID, ROC_METRIC_SUFFIXES, strict=True):
            metrics[f"audit/{name}{suffix}"] = tpr_at_fpr(r.fpr, r.tpr, fpr)
    for name, c in report.null_control.items():
        metrics[f"audit/{name}/null_auc"] = _plain(c.auc)
        if c.auc_ci is not None:
            metrics[f"audit/{name}/null_auc_ci95_low"] = _plain(c.auc_ci[0])
            metrics[f"audit/{name}/null_auc_ci95_high"] = _plain(c.auc_ci[1])
    for name, value in report.p1d.items():
        metrics[f"audit/{name}/p1d"] = _plain(value)
    for space, rate in report.memorization.items():
        metrics[f"audit/memorization/{space}"] = _plain(rate)
    return {k: v for k, v in metrics.items() if v is not None}


def format_with_interval(
    value: float, interval: tuple[float, float] | None, digits: int = 3
) -> str:
    """``0.523 [0.480, 0.566]``, or the value alone when no interval was computed."""
    if interval is None:
        return f"{value:.{digits}f}"
    low, high = interval
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _flat_interval(metrics: dict[str, float], key: str) -> tuple[float, float] | None:
    """The 95 % interval sent beside flat metric ``key``, or None without one."""
    low, high = (metrics.get(f"{key}_ci95_{b}") for b in ("low", "high"))
    return None if low is None or high is None else (low, high)


def attack_aucs(
    metrics: dict[str, float],
) -> dict[str, tuple[float, tuple[float, float] | None]]:
    """Each attack's AUC and 95 % interval, read back from :func:`audit_metrics`.

    The coordinator receives only the flat metrics; an interval is None when
    the site sent no bounds.

    Parameters
    ----------
    metrics : flat audit metrics of one site.

    Returns
    -------
    dict
        Attack name → ``(auc, (low, high) or None)``.
    """
    aucs = {}
    for key, auc in metrics.items():
        if not (key.startswith("audit/") and key.endswith("/auc")):
            continue
        name = key.removeprefix("audit/").removesuffix("/auc")
        aucs[name] = (auc, _flat_interval(metrics, key))
    return aucs


@dataclass(frozen=True)
class RocCurve:
    """One attack's ROC points and audit size, for :func:`plot_roc_curves`."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    tpr_at_1pct_fpr: float
    n_members: int
    n_nonmembers: int


def roc_curves_from_metrics(metrics: dict[str, float]) -> dict[str, RocCurve]:
    """Each attack's ROC on :data:`ROC_FPR_GRID`, read back from :func:`audit_metrics`.

    Attacks whose site sent no ROC points (an older site) are left out.
    """
    curves = {}
    for name, (auc, _) in attack_aucs(metrics).items():
        prefix = f"audit/{name}"
        points = [metrics.get(prefix + suffix) for suffix in ROC_METRIC_SUFFIXES]
        sizes = [metrics.get(f"{prefix}/{short}") for short in SIZE_FIELDS.values()]
        if None in points or None in sizes:
            continue
        curves[name] = RocCurve(
            fpr=np.array(ROC_FPR_GRID),
            tpr=np.array(points),
            auc=auc,
            tpr_at_1pct_fpr=metrics.get(f"{prefix}/tpr@1fpr", float("nan")),
            n_members=int(sizes[0]),
            n_nonmembers=int(sizes[1]),
        )
    return curves


def leaking_attacks(
    metrics: dict[str, float], max_auc: float, max_tpr: float | None = None
) -> list[str]:
    """The attacks whose flat audit metrics leak (:func:`auc_leaks`, :func:`tpr_leaks`).

    Parameters
    ----------
    metrics : flat audit metrics of one site (:func:`attack_aucs` reads them).
    max_auc : the largest AUC tolerated.
    max_tpr : the largest TPR at 1 % FPR tolerated beyond chance; None: not tested.

    Returns
    -------
    list of str
        Sorted attack names.
    """
    return sorted(
        name
        for name, (auc, interval) in attack_aucs(metrics).items()
        if auc_leaks(auc, max_auc, interval)
        or tpr_leaks(_flat_interval(metrics, f"audit/{name}/tpr@1fpr"), max_tpr)
    )


def write_report_json(
    report: AuditReport, path: str | Path, gate: GateDecision | None = None
) -> Path:
    """Write :func:`report_to_dict` as JSON (strict: no NaN or infinity).

    Parameters
    ----------
    report : the audit report.
    path : the output file; parent folders are created.
    gate : the release decision, when one was taken.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report_to_dict(report, gate), indent=2, allow_nan=False)
    path.write_text(text + "\n")
    return path


def plot_roc(
    results: dict[str, AttackResult], path: str | Path, title: str | None = None
) -> Path:
    """Plot every attack's full ROC (:func:`plot_roc_curves`) from an audit report."""
    return plot_roc_curves(
        {
            name: RocCurve(
                r.fpr, r.tpr, r.auc, r.tpr_at_1pct_fpr, r.n_members, r.n_nonmembers
            )
            for name, r in results.items()
        },
        path,
        title,
    )


def plot_roc_curves(
    curves: dict[str, RocCurve], path: str | Path, title: str | None = None
) -> Path:
    """Plot attack ROCs on log-log axes with the chance diagonal and band, as PNG.

    The grey band is where an attack that knows nothing lands 95 % of the time
    at this audit's size (:func:`~medsynth_fl.privacy.metrics.null_roc_band`),
    as ML Privacy Meter shows chance; a curve inside it shows no leak.

    Parameters
    ----------
    curves : attack name → its ROC points and audit size.
    path : the output ``.png``; parent folders are created.
    title : figure title.

    Returns
    -------
    Path
        The written file.
    """
    if not curves:
        raise ValueError("nothing to plot")
    n_max = max(c.n_nonmembers for c in curves.values())
    low = min(1e-3, 0.5 / n_max)  # below the smallest non-zero FPR
    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    smallest = min(curves.values(), key=lambda c: c.n_members + c.n_nonmembers)
    band_fpr = np.geomspace(max(low, 1.0 / smallest.n_nonmembers), 1.0, 30)
    band_low, band_high = null_roc_band(
        smallest.n_members, smallest.n_nonmembers, band_fpr, n_sim=500
    )
    ax.fill_between(
        band_fpr,
        np.clip(band_low, low, 1),
        np.clip(band_high, low, 1),
        color="0.85",
        label=f"chance, 95 % ({smallest.n_members} vs {smallest.n_nonmembers})",
    )
    for name, c in sorted(curves.items()):
        # Log axes cannot show 0: clip to the lower limit so curves start there.
        ax.plot(
            np.clip(c.fpr, low, 1),
            np.clip(c.tpr, low, 1),
            label=f"{name} (AUC {c.auc:.3f}, TPR@1% {c.tpr_at_1pct_fpr:.3f})",
        )
    ax.plot([low, 1], [low, 1], "k--", linewidth=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(low, 1), ylim=(low, 1))
    ax.set(xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title(title or "Membership inference ROC")
    ax.legend(loc="lower right", fontsize="x-small")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
