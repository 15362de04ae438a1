"""Privacy audits of generators: signals, attacks, metrics and reports.

``signals`` computes per-sample signals, ``attacks`` turns them into
membership scores (larger = member), ``metrics`` evaluates them, ``report``
renders the results; ``audit`` is the one entry point that builds the attacks
and runs them, ``gate`` decides whether a generator may be released, and
``memorization`` holds seed 001's copy check and rejection filter.
"""

from .attack_models import AttackModels, AttackStateError
from .audit import (
    AuditReport,
    audit_options,
    build_generator_only_attacks,
    build_package_attacks,
    build_reference_attacks,
    run_audit,
    score_candidates,
    select_candidates,
)
from .features import RandomConvFeatures
from .gate import GateDecision, auc_leaks, gate_limits, release_gate, tpr_leaks
from .memorization import RejectionResult, memorization_rate, reject_memorized
from .metrics import AttackResult, ChanceLevel, evaluate_attack, p1d, permutation_chance
from .report import (
    attack_aucs,
    audit_metrics,
    format_with_interval,
    leaking_attacks,
    plot_roc,
    plot_roc_curves,
    report_to_dict,
    roc_curves_from_metrics,
    write_report_json,
)

__all__ = [
    "AttackModels",
    "AttackResult",
    "AttackStateError",
    "AuditReport",
    "ChanceLevel",
    "GateDecision",
    "RandomConvFeatures",
    "RejectionResult",
    "auc_leaks",
    "attack_aucs",
    "audit_options",
    "audit_metrics",
    "build_generator_only_attacks",
    "build_package_attacks",
    "build_reference_attacks",
    "evaluate_attack",
    "format_with_interval",
    "gate_limits",
    "leaking_attacks",
    "memorization_rate",
    "p1d",
    "permutation_chance",
    "plot_roc",
    "plot_roc_curves",
    "reject_memorized",
    "release_gate",
    "report_to_dict",
    "roc_curves_from_metrics",
    "run_audit",
    "score_candidates",
    "select_candidates",
    "tpr_leaks",
    "write_report_json",
]
