"""Known-answer tests of package verification on fake replies (no Flower runtime)."""

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from coordinator.strategy import MedSynthStrategy
from medsynth_fl.package import KeyRing, generate_site_key
from site_client.egress import package_reply

from ..package.test_package import make_package


@pytest.fixture
def setup(tmp_path):
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    keys = {s: generate_site_key(tmp_path / f"{s}.pem") for s in ("site-a", "site-b")}
    ring = KeyRing({s: k.public_key() for s, k in keys.items()})
    return keys, MedSynthStrategy(ring, max_package_bytes=10**8, min_sites=1)


def reply_from(node, content):
    req = Message(
        RecordDict({"config": ConfigRecord({})}), dst_node_id=node, message_type="train"
    )
    return Message(content, reply_to=req)


def good(node, key, site):
    req = Message(
        RecordDict({"config": ConfigRecord({})}), dst_node_id=node, message_type="train"
    )
    return package_reply(req, make_package(key, site_id=site)[1], {"num-examples": 5})


def test_accepts_valid_and_names_each_refusal(setup, tmp_path):
    keys, strategy = setup
    stranger = generate_site_key(tmp_path / "stranger.pem")
    tampered = good(3, keys["site-b"], "site-b")
    arrays = tampered.content["generator"]
    arrays["class_canvas"] = Array(arrays["class_canvas"].numpy() + 1)
    replies = [
        good(1, keys["site-a"], "site-a"),
        good(2, stranger, "site-b"),  # site-b's name, someone else's key
        tampered,
        reply_from(
            4,
            RecordDict(
                {
                    "generator": ArrayRecord({"x": Array(np.zeros(2))}),
                    "package": ConfigRecord(
                        {"manifest": "not json", "signature": "AA=="}
                    ),
                }
            ),
        ),
        Message(
            Error(code=1, reason="site crashed"),
            reply_to=Message(RecordDict(), dst_node_id=5, message_type="train"),
        ),
        good(6, keys["site-a"], "site-a"),  # a second package for site-a
    ]
    out = strategy.aggregate_train_outcome(replies)
    assert list(out.accepted) == [1]
    reasons = {r.node_id: r.reason for r in out.refused}
    assert "unknown-signer" in reasons[2]
    assert "hash-mismatch" in reasons[3]
    assert "schema" in reasons[4]
    assert "site crashed" in reasons[5]
    assert "already sent" in reasons[6]


def test_oversized_package_is_refused(setup):
    keys, _ = setup
    strategy = MedSynthStrategy(
        KeyRing.single(keys["site-a"].public_key()), max_package_bytes=2048, min_sites=1
    )
    out = strategy.aggregate_train_outcome([good(1, keys["site-a"], "site-a")])
    assert not out.accepted and "oversized" in out.refused[0].reason


def test_configure_train_does_not_mutate_the_callers_config(setup):
    _, strategy = setup
    config = ConfigRecord({"nodes": [1, 2], "run-id": "r"})

    class G:
        def get_node_ids(self):
            return [1, 2, 3]

    msgs = list(strategy.configure_train(1, ArrayRecord(), config, G()))
    assert [m.metadata.dst_node_id for m in msgs] == [1, 2]
    assert dict(config) == {"nodes": [1, 2], "run-id": "r"}
    assert "nodes" not in msgs[0].content["config"]
