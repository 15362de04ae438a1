"""The egress guard: the one place that builds what a site sends to the coordinator.

A site may send only (a) a generator package — exactly the tensors its manifest's
architecture declares, plus the manifest and signature — and (b) aggregate
metrics under whitelisted names. Everything else is refused before it reaches
Flower, so no image, gradient, critic, teacher or optimiser state can leave.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from medsynth_fl.package import GeneratorPackage
from medsynth_fl.package.io import expected_tensors, weights_sha256
from medsynth_fl.privacy.report import ROC_METRIC_SUFFIXES
from medsynth_fl.wire import (
    METRIC_KEYS,
    Key,
    Record,
)

AUDIT_METRIC_SUFFIXES = (
    "/acc",
    "/auc",
    "/tpr@1fpr",
    "/tpr@0.1fpr",
    "/p1d",
    "/pixel",
    "/embed",
    "_ci95_low",  # bounds of the bootstrap intervals of AUC and TPR
    "_ci95_high",
    "/null_auc",  # the null control: the attack on two halves of non-members
    "/members",  # audit sizes: how many scores each side had
    "/nonmembers",
    *ROC_METRIC_SUFFIXES,  # the ROC as best TPR at a few FPRs (aggregate)
)
MAX_REASON_CHARS = 2000


class EgressViolation(RuntimeError):
    """Something not allowed was about to leave the site.

    Only a generator package or whitelisted metrics may leave.
    """


def _check_metrics(metrics: dict[str, float]) -> MetricRecord:
    for key, value in metrics.items():
        allowed = key in METRIC_KEYS or (
            key.startswith("audit/") and key.endswith(AUDIT_METRIC_SUFFIXES)
        )
        if not allowed:
            raise EgressViolation(f"metric {key!r} is not on the egress whitelist")
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise EgressViolation(
                f"metric {key!r} must be one finite number, got {value!r}"
            )
    return MetricRecord({k: float(v) for k, v in metrics.items()})


def _check_package(pkg: GeneratorPackage) -> ArrayRecord:
    expected = expected_tensors(pkg.manifest)
    if set(pkg.tensors) != set(expected):
        extra = sorted(set(pkg.tensors) - set(expected))
        raise EgressViolation(
            f"package holds tensors outside the generator: {extra[:5]}"
        )
    for name, tensor in pkg.tensors.items():
        if tuple(tensor.shape) != expected[name][0] or tensor.requires_grad:
            raise EgressViolation(
                f"tensor {name!r} differs from the declared generator"
            )
    if weights_sha256(pkg.tensors) != pkg.manifest.weights.sha256:
        raise EgressViolation("tensors do not match the signed manifest")
    return ArrayRecord(
        {k: Array(np.ascontiguousarray(v.numpy())) for k, v in pkg.tensors.items()}
    )


def package_reply(
    msg: Message, pkg: GeneratorPackage, metrics: dict[str, float]
) -> Message:
    """Reply to a train request with the package and aggregate metrics only."""
    content = RecordDict(
        {
            Record.GENERATOR: _check_package(pkg),
            Record.PACKAGE: ConfigRecord(
                {
                    Key.MANIFEST: pkg.manifest.canonical_bytes().decode(),
                    Key.SIGNATURE: pkg.signature_b64,
                    Key.SITE_ID: pkg.manifest.site_id,
                }
            ),
            Record.METRICS: _check_metrics(metrics),
        }
    )
    return Message(content, reply_to=msg)


def refusal_reply(
    msg: Message, site_id: str, reasons: list[str], metrics: dict[str, float]
) -> Message:
    """Reply to a train request when the site's release gate refused its generator.

    Carries the gate's reasons (attack names and AUCs, no data) and the audit's
    aggregate metrics; no tensor at all.
    """
    text = "; ".join(reasons)
    if len(text) > MAX_REASON_CHARS:
        raise EgressViolation("refusal reasons are too long to be aggregate metadata")
    content = RecordDict(
        {
            Record.REFUSAL: ConfigRecord({Key.SITE_ID: site_id, Key.REASONS: text}),
            Record.METRICS: _check_metrics(metrics),
        }
    )
    return Message(content, reply_to=msg)


def require_baseline_opt_in(allowed: bool) -> None:
    """Refuse a baseline that ships a classifier unless the site opted in.

    Called before the site trains (no compute spent on a reply that could not
    leave) and again in :func:`baseline_model_reply`, the only way out.
    """
    if not allowed:
        raise EgressViolation(
            "this site has not opted in to baselines that ship a classifier "
            "(node config allow-baselines=true)"
        )


def baseline_model_reply(
    msg: Message,
    sent: ArrayRecord,
    state: dict,
    metrics: dict[str, float],
    allowed: bool,
) -> Message:
    """FedAvg baseline only: return the classifier the coordinator sent, updated.

    This is the one path on which a model trained on patient images leaves a
    site, so the site must opt in (node config ``allow-baselines``), and the
    reply must hold exactly the tensors it received, with the same shapes.
    """
    require_baseline_opt_in(allowed)
    if set(state) != set(sent) or any(
        tuple(state[k].shape) != tuple(sent[k].shape) for k in sent
    ):
        raise EgressViolation(
            "the updated model differs from the model the coordinator sent"
        )
    arrays = ArrayRecord(
        {
            k: Array(np.ascontiguousarray(v.detach().cpu().numpy()))
            for k, v in state.items()
        }
    )
    return Message(
        RecordDict({Record.ARRAYS: arrays, Record.METRICS: _check_metrics(metrics)}),
        reply_to=msg,
    )


def metrics_reply(msg: Message, metrics: dict[str, float]) -> Message:
    """Reply with aggregate metrics only.

    For evaluation, audits, a refusal's reasons in logs.
    """
    return Message(RecordDict({Record.METRICS: _check_metrics(metrics)}), reply_to=msg)
