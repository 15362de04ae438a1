"""Round trips of every message type, built by the site and read by the coordinator."""

from __future__ import annotations

import uuid

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.supercore.task_identity import TaskIdentity

from coordinator.replies import reply_metrics
from coordinator.strategy import MedSynthStrategy, _claimed_site_id, _package_from_reply
from medsynth_fl.package import KeyRing, Release, bind_release, generate_site_key
from medsynth_fl.wire import METRIC_KEYS, Key, Metric, Record
from site_client.egress import metrics_reply, package_reply, refusal_reply

from .package.test_package import make_package


@pytest.fixture
def site(tmp_path):
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    key = generate_site_key(tmp_path / "a.pem")
    return key, MedSynthStrategy(KeyRing({"site-a": key.public_key()}), 10**8, 1)


def _request(strategy) -> Message:
    (msg,) = strategy.configure_train(
        3, ArrayRecord(), ConfigRecord({"nodes": [7], Key.RUN_ID: "r"}), None
    )
    msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
    return msg


def test_the_generator_request_carries_the_binding_the_site_signs(site):
    key, strategy = site
    config = _request(strategy).content[Record.CONFIG]
    release = Release(
        run_id=config[Key.RUN_ID],
        round=config[Key.SERVER_ROUND],
        nonce=config[Key.NONCE],
    )
    assert release == strategy.challenges[7]


def test_a_package_reply_reads_back_as_the_package_it_was_built_from(site):
    key, strategy = site
    request = _request(strategy)
    pkg = bind_release(make_package(key, "site-a")[1], strategy.challenges[7], key)
    metrics = {Metric.NUM_EXAMPLES: 12, Metric.SECONDS: 1.5}
    reply = package_reply(request, pkg, metrics)
    assert set(reply.content) == {Record.GENERATOR, Record.PACKAGE, Record.METRICS}
    read, read_metrics = _package_from_reply(reply, strategy.trusted, 10**8)
    assert read.manifest == pkg.manifest and read_metrics == metrics
    assert all(read.tensors[k].equal(v) for k, v in pkg.tensors.items())


def test_a_refusal_reply_names_its_site_and_reasons(site):
    _, strategy = site
    reply = refusal_reply(_request(strategy), "site-a", ["nn_pixel: AUC 0.9"], {})
    assert _claimed_site_id(reply) == "site-a"
    assert "nn_pixel" in str(reply.content[Record.REFUSAL][Key.REASONS])


def test_a_metrics_reply_reads_back_exactly(site):
    _, strategy = site
    values = {m: float(i) for i, m in enumerate(sorted(METRIC_KEYS))}
    values["audit/nn_pixel/auc"] = 0.51
    reply = metrics_reply(_request(strategy), values)
    assert reply_metrics(reply) == values


def test_wire_names_are_unique():
    names = [
        v
        for cls in (Record, Key, Metric)
        for k, v in vars(cls).items()
        if not k.startswith("_")
    ]
    records = [v for k, v in vars(Record).items() if not k.startswith("_")]
    assert len(set(records)) == len(records)
    assert len(set(names)) == len(names)  # no key means two things
