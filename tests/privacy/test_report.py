"""Report rendering: strict JSON with plain floats, flat metric names, ROC PNG."""

import json
import math

import numpy as np
import pytest

from medsynth_fl.privacy.audit import AuditReport
from medsynth_fl.privacy.gate import GateDecision
from medsynth_fl.privacy.metrics import evaluate_attack, null_control, tpr_at_fpr
from medsynth_fl.privacy.report import (
    ROC_FPR_GRID,
    audit_metrics,
    plot_roc,
    plot_roc_curves,
    report_to_dict,
    roc_curves_from_metrics,
    write_report_json,
)


@pytest.fixture
def report():
    rng = np.random.default_rng(0)
    results = {
        "logan_wb": evaluate_attack(
            "logan_wb", rng.normal(1, 1, 50), rng.normal(0, 1, 60)
        ),
        "nn_pixel": evaluate_attack(
            "nn_pixel", rng.normal(0, 1, 50), rng.normal(0, 1, 60)
        ),
    }
    return AuditReport(
        null_control={
            name: null_control(name, rng.normal(0, 1, 60)) for name in results
        },
        results=results,
        memorization={"pixel": 0.25, "embed": float("nan")},
        memorization_threshold={"pixel": np.float64(3.5), "embed": float("inf")},
        task_accuracy=0.7,
        p1d={"logan_wb": 0.6, "nn_pixel": 0.66},
    )


def refuse_constant(name):
    raise ValueError(f"non-standard JSON constant {name}")


def test_json_has_plain_floats_and_no_nan(report, tmp_path):
    gate = GateDecision(allowed=False, reasons=["logan_wb: AUC 0.760 > 0.600"])

    path = write_report_json(report, tmp_path / "audit" / "report.json", gate)
    data = json.loads(path.read_text(), parse_constant=refuse_constant)

    wb = data["attacks"]["logan_wb"]
    assert wb["auc"] == pytest.approx(report.results["logan_wb"].auc)
    assert (wb["n_members"], wb["n_nonmembers"]) == (50, 60)
    assert len(wb["roc"]["fpr"]) == len(report.results["logan_wb"].fpr)
    assert wb["ci95"]["auc"] == list(report.results["logan_wb"].auc_ci)
    assert set(wb["ci95"]) == {"auc", "tpr_at_1pct_fpr", "tpr_at_0_1pct_fpr"}
    assert data["memorization"] == {"pixel": 0.25, "embed": None}
    assert data["memorization_threshold"] == {"pixel": 3.5, "embed": None}
    assert data["gate"] == {"allowed": False, "reasons": gate.reasons, "notes": []}
    assert set(data["null_control"]) == {"logan_wb", "nn_pixel"}
    assert data["task_accuracy"] == 0.7 and data["p1d"]["nn_pixel"] == 0.66


def test_report_dict_holds_only_plain_python_types(report):
    def walk(x):
        if isinstance(x, dict):
            return all(isinstance(k, str) and walk(v) for k, v in x.items())
        if isinstance(x, list):
            return all(walk(v) for v in x)
        return x is None or type(x) in (bool, int, float, str)

    assert walk(report_to_dict(report))
    assert "roc" not in report_to_dict(report, include_roc=False)["attacks"]["nn_pixel"]


def test_flat_metric_names_are_hierarchical_and_finite(report):
    metrics = audit_metrics(report)

    assert metrics["audit/logan_wb/auc"] == pytest.approx(
        report.results["logan_wb"].auc
    )
    assert (
        "audit/nn_pixel/tpr@1fpr" in metrics and "audit/nn_pixel/tpr@0.1fpr" in metrics
    )
    low, high = report.results["logan_wb"].tpr_at_1pct_fpr_ci
    assert metrics["audit/logan_wb/tpr@1fpr_ci95_low"] == low
    assert metrics["audit/logan_wb/tpr@1fpr_ci95_high"] == high
    assert metrics["audit/logan_wb/p1d"] == 0.6
    assert metrics["audit/memorization/pixel"] == 0.25
    assert metrics["audit/nn_pixel/null_auc"] == report.null_control["nn_pixel"].auc
    assert "audit/nn_pixel/null_auc_ci95_low" in metrics
    assert "audit/memorization/embed" not in metrics  # NaN is left out
    assert all(math.isfinite(v) for v in metrics.values())


def test_roc_plot_is_written_as_png(report, tmp_path):
    path = plot_roc(report.results, tmp_path / "plots" / "roc.png", title="site 1")

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_roc_plot_needs_results(tmp_path):
    with pytest.raises(ValueError):
        plot_roc({}, tmp_path / "roc.png")


def test_the_roc_travels_as_a_few_points_and_draws_back(report, tmp_path):
    metrics = audit_metrics(report)
    curves = roc_curves_from_metrics(metrics)
    assert set(curves) == {"logan_wb", "nn_pixel"}
    wb, result = curves["logan_wb"], report.results["logan_wb"]
    assert (wb.n_members, wb.n_nonmembers) == (50, 60)
    assert list(wb.fpr) == list(ROC_FPR_GRID)
    assert wb.tpr[3] == metrics["audit/logan_wb/tpr@1fpr"]  # the grid holds 1 %
    for fpr, tpr in zip(wb.fpr, wb.tpr, strict=True):
        assert tpr == tpr_at_fpr(result.fpr, result.tpr, fpr)
    assert wb.tpr[-1] == 1.0 and np.all(np.diff(wb.tpr) >= 0)
    # a site that sent no ROC points (older release) draws nothing, no error
    bare = {k: v for k, v in metrics.items() if "/roc/" not in k}
    assert roc_curves_from_metrics(bare) == {}
    path = plot_roc_curves(curves, tmp_path / "roc.png")
    assert path.stat().st_size > 5000
