"""The egress guard lets only the generator package and whitelisted metrics out."""

import dataclasses

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from medsynth_fl.privacy import AuditReport, audit_metrics, evaluate_attack
from site_client.egress import EgressViolation, metrics_reply, package_reply

from ..package.test_package import make_package


@pytest.fixture
def request_msg():
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    return Message(
        RecordDict({"config": ConfigRecord({"server-round": 1})}),
        dst_node_id=7,
        message_type="train",
    )


def test_package_reply_carries_exactly_the_generator(site_key, request_msg):
    key, _ = site_key
    g, pkg = make_package(key)
    reply = package_reply(request_msg, pkg, {"num-examples": 10, "seconds": 1.5})
    assert set(reply.content) == {"generator", "package", "metrics"}
    assert set(reply.content["generator"]) == set(g.state_dict())
    assert set(reply.content["package"]) == {"manifest", "signature", "site-id"}
    assert dict(reply.content["metrics"]) == {"num-examples": 10.0, "seconds": 1.5}


def test_extra_tensor_cannot_leave(site_key, request_msg):
    key, _ = site_key
    _, pkg = make_package(key)
    smuggled = dataclasses.replace(
        pkg, tensors={**pkg.tensors, "critic.fc1.weight": torch.zeros(4, 4)}
    )
    with pytest.raises(EgressViolation, match="outside the generator"):
        package_reply(request_msg, smuggled, {})


def test_an_image_in_place_of_a_weight_cannot_leave(site_key, request_msg):
    key, _ = site_key
    _, pkg = make_package(key)
    tensors = dict(pkg.tensors)
    tensors["class_canvas"] = torch.rand(
        3, 3, 16, 16
    )  # an image batch, not the declared shape
    with pytest.raises(EgressViolation):
        package_reply(request_msg, dataclasses.replace(pkg, tensors=tensors), {})


def test_weights_changed_after_signing_cannot_leave(site_key, request_msg):
    key, _ = site_key
    _, pkg = make_package(key)
    tensors = {k: v.clone() for k, v in pkg.tensors.items()}
    tensors["class_canvas"] += 1
    with pytest.raises(EgressViolation, match="signed manifest"):
        package_reply(request_msg, dataclasses.replace(pkg, tensors=tensors), {})


@pytest.mark.parametrize(
    "metrics,match",
    [
        ({"train-loss-per-image": 0.1}, "whitelist"),
        ({"gradients": 1.0}, "whitelist"),
        ({"auc": float("nan")}, "finite"),
        ({"auc": [0.1, 0.2]}, "finite"),
        ({"audit/logan_wb/scores": 0.2}, "whitelist"),
    ],
)
def test_only_whitelisted_finite_scalar_metrics_leave(request_msg, metrics, match):
    with pytest.raises(EgressViolation, match=match):
        metrics_reply(request_msg, metrics)


def test_metrics_reply_is_metrics_only(request_msg):
    reply = metrics_reply(
        request_msg, {"auc": 0.7, "num-examples": 12, "audit/logan_wb/auc": 0.51}
    )
    assert list(reply.content) == ["metrics"]
    assert isinstance(reply.content["metrics"], MetricRecord)
    assert not any(isinstance(r, ArrayRecord) for r in reply.content.values())
    assert np.isclose(reply.content["metrics"]["auc"], 0.7)


def test_a_classifier_leaves_only_with_the_sites_opt_in(request_msg):
    from flwr.app import Array

    from site_client.egress import baseline_model_reply

    sent = ArrayRecord({"w": Array(np.zeros((2, 3), np.float32))})
    state = {"w": torch.ones(2, 3)}
    with pytest.raises(EgressViolation, match="opted in"):
        baseline_model_reply(
            request_msg, sent, state, {"num-examples": 3}, allowed=False
        )
    with pytest.raises(EgressViolation, match="differs"):
        baseline_model_reply(
            request_msg,
            sent,
            {"w": torch.ones(2, 3), "x": torch.ones(1)},
            {},
            allowed=True,
        )
    reply = baseline_model_reply(
        request_msg, sent, state, {"num-examples": 3}, allowed=True
    )
    assert set(reply.content["arrays"]) == {"w"}


def test_gate_refusal_carries_reasons_and_no_tensor(request_msg):
    from site_client.egress import refusal_reply

    reply = refusal_reply(
        request_msg, "site-a", ["logan_wb: AUC 0.900 > 0.600"], {"gate-allowed": 0.0}
    )
    assert set(reply.content) == {"refusal", "metrics"}
    assert reply.content["refusal"]["reasons"] == "logan_wb: AUC 0.900 > 0.600"


def test_every_metric_of_an_audit_report_may_leave(request_msg):
    # The audit's flat metrics (intervals included) are aggregates: the whitelist
    # must let all of them out, or a site's audit reply would fail at egress.
    rng = np.random.default_rng(0)
    report = AuditReport(
        results={"logan_wb": evaluate_attack("logan_wb", *rng.normal(size=(2, 30)))},
        memorization={"pixel": 0.0, "embed": 0.0},
        memorization_threshold={"pixel": 1.0, "embed": 1.0},
        task_accuracy=0.5,
        p1d={"logan_wb": 0.5},
    )
    metrics = audit_metrics(report)

    reply = metrics_reply(request_msg, metrics)

    assert "audit/logan_wb/auc_ci95_high" in metrics
    assert set(reply.content["metrics"]) == set(metrics)
