"""Known-answer tests of package verification on fake replies (no Flower runtime)."""

import base64
import json
import math
import uuid

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity

from coordinator.strategy import MedSynthStrategy
from medsynth_fl.package import (
    FORMAT_VERSION,
    KeyRing,
    Release,
    bind_release,
    generate_site_key,
)
from medsynth_fl.package.manifest import canonical_json
from site_client.egress import package_reply

from ..package.test_package import make_package


@pytest.fixture
def setup(tmp_path):
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    keys = {s: generate_site_key(tmp_path / f"{s}.pem") for s in ("site-a", "site-b")}
    ring = KeyRing({s: k.public_key() for s, k in keys.items()})
    return keys, MedSynthStrategy(ring, max_package_bytes=10**8, min_sites=1)


class Grid:
    def get_node_ids(self):
        return [1, 2, 3, 4, 5, 6]


def ask(strategy, nodes, server_round=1, run_id="run-1") -> dict[int, Message]:
    """The strategy's requests by node, with message ids as the Grid sets them."""
    config = ConfigRecord({"nodes": list(nodes), "run-id": run_id})
    requests = {}
    for m in strategy.configure_train(server_round, ArrayRecord(), config, Grid()):
        m.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as Grid.push does
        requests[m.metadata.dst_node_id] = m
    return requests


def answer(request, key, site, pkg=None, bind=True):
    """What the site sends: its package bound to ``request`` (as the ClientApp does)."""
    pkg = pkg or make_package(key, site_id=site)[1]
    if bind:
        config = request.content["config"]
        release = Release(
            run_id=config["run-id"], round=config["server-round"], nonce=config["nonce"]
        )
        pkg = bind_release(pkg, release, key)
    return package_reply(request, pkg, {"num-examples": 5})


def test_accepts_valid_and_names_each_refusal(setup, tmp_path):
    keys, strategy = setup
    stranger = generate_site_key(tmp_path / "stranger.pem")
    asked = ask(strategy, [1, 2, 3, 4, 5, 6])
    tampered = answer(asked[3], keys["site-b"], "site-b")
    arrays = tampered.content["generator"]
    arrays["class_canvas"] = Array(arrays["class_canvas"].numpy() + 1)
    replies = [
        answer(asked[1], keys["site-a"], "site-a"),
        answer(asked[2], stranger, "site-b"),  # site-b's name, someone else's key
        tampered,
        Message(
            RecordDict(
                {
                    "generator": ArrayRecord({"x": Array(np.zeros(2))}),
                    "package": ConfigRecord(
                        {"manifest": "not json", "signature": "AA=="}
                    ),
                }
            ),
            reply_to=asked[4],
        ),
        Message(Error(code=1, reason="site crashed"), reply_to=asked[5]),
        answer(asked[6], keys["site-a"], "site-a"),  # a second package for site-a
    ]
    out = strategy.aggregate_train_outcome(replies, asked.values())
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
    request = ask(strategy, [1])[1]
    out = strategy.aggregate_train_outcome(
        [answer(request, keys["site-a"], "site-a")], [request]
    )
    assert not out.accepted and "oversized" in out.refused[0].reason


def test_configure_train_does_not_mutate_the_callers_config(setup):
    _, strategy = setup
    config = ConfigRecord({"nodes": [1, 2], "run-id": "r"})

    msgs = list(strategy.configure_train(1, ArrayRecord(), config, Grid()))
    assert [m.metadata.dst_node_id for m in msgs] == [1, 2]
    assert dict(config) == {"nodes": [1, 2], "run-id": "r"}
    assert "nodes" not in msgs[0].content["config"]


# -- replay and substitution (issue 18) -------------------------------------------
def _refusal(strategy, replies, sent) -> str:
    out = strategy.aggregate_train_outcome(replies, sent)
    assert not out.accepted
    return out.refused[0].reason


def test_each_node_gets_its_own_fresh_nonce(setup):
    _, strategy = setup
    first = ask(strategy, [1, 2])
    nonces = {n: m.content["config"]["nonce"] for n, m in first.items()}
    assert len(set(nonces.values())) == 2
    again = ask(strategy, [1, 2])
    assert not set(nonces.values()) & {
        m.content["config"]["nonce"] for m in again.values()
    }


def test_a_package_bound_to_this_request_is_accepted(setup):
    keys, strategy = setup
    asked = ask(strategy, [1])
    out = strategy.aggregate_train_outcome(
        [answer(asked[1], keys["site-a"], "site-a")], asked.values()
    )
    assert list(out.accepted) == [1]
    assert (
        out.accepted[1][0].manifest.release.nonce == asked[1].content["config"]["nonce"]
    )


def test_a_stored_unbound_package_sent_again_is_refused(setup):
    keys, strategy = setup
    asked = ask(strategy, [1])
    reply = answer(asked[1], keys["site-a"], "site-a", bind=False)
    assert "unbound" in _refusal(strategy, [reply], asked.values())


def test_a_package_from_an_earlier_round_is_refused(setup):
    keys, strategy = setup
    old = answer(ask(strategy, [1], server_round=1)[1], keys["site-a"], "site-a")
    now = ask(strategy, [1], server_round=2)
    # the old reply re-addressed to the new request: a replay of round 1
    replay = package_reply(now[1], _package_of(old, strategy), {})
    assert "stale-round" in _refusal(strategy, [replay], now.values())


def test_a_package_from_another_run_is_refused(setup):
    keys, strategy = setup
    other = answer(ask(strategy, [1], run_id="run-0")[1], keys["site-a"], "site-a")
    now = ask(strategy, [1], run_id="run-1")
    replay = package_reply(now[1], _package_of(other, strategy), {})
    assert "wrong-run" in _refusal(strategy, [replay], now.values())


def test_a_package_re_sent_by_another_site_is_refused(setup):
    keys, strategy = setup
    asked = ask(strategy, [1, 2])
    genuine = answer(asked[1], keys["site-a"], "site-a")
    # node 2 forwards site-a's bound package as its own answer
    stolen = package_reply(asked[2], _package_of(genuine, strategy), {})
    out = strategy.aggregate_train_outcome([stolen], asked.values())
    assert not out.accepted
    assert "nonce-of-another-node" in out.refused[0].reason
    assert "node 1" in out.refused[0].reason


def test_a_nonce_the_coordinator_never_issued_is_refused(setup):
    keys, strategy = setup
    asked = ask(strategy, [1])
    forged = Release(run_id="run-1", round=1, nonce="0" * 32)
    pkg = bind_release(
        make_package(keys["site-a"], "site-a")[1], forged, keys["site-a"]
    )
    reply = package_reply(asked[1], pkg, {})
    assert "unissued-nonce" in _refusal(strategy, [reply], asked.values())


def test_a_downgrade_to_an_older_format_version_is_refused(setup):
    keys, strategy = setup
    asked = ask(strategy, [1])
    reply = answer(asked[1], keys["site-a"], "site-a")
    manifest = json.loads(str(reply.content["package"]["manifest"]))
    manifest["format_version"] = FORMAT_VERSION - 1
    text = canonical_json(manifest)
    reply.content["package"]["manifest"] = text.decode()
    reply.content["package"]["signature"] = base64.b64encode(
        keys["site-a"].sign(text)
    ).decode()
    assert "unsupported-format" in _refusal(strategy, [reply], asked.values())


def test_a_reply_to_a_request_never_sent_is_refused(setup):
    keys, strategy = setup
    asked = ask(strategy, [1])
    stray = ask(MedSynthStrategy(strategy.trusted, 10**8, 1), [1])[1]
    reply = answer(stray, keys["site-a"], "site-a")
    assert "never sent" in _refusal(strategy, [reply], asked.values())


def _package_of(reply, strategy):
    """The verified package inside a reply (what an eavesdropper could record)."""
    from coordinator.strategy import _package_from_reply

    return _package_from_reply(reply, strategy.trusted, 10**8)[0]


# -- hostile and broken replies (issue 18) -----------------------------------------
def _damaged(reply, edit):
    edit(reply.content)
    return reply


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda c: c.__delitem__("package"), "malformed-reply"),
        (lambda c: c["package"].__delitem__("signature"), "malformed-reply"),
        (
            lambda c: c["generator"].__setitem__(
                "class_canvas", Array(np.array(["x", "y"]))
            ),
            "malformed-reply",
        ),
        (
            lambda c: c["generator"].__setitem__(
                "class_canvas", Array(np.zeros((2, 2), np.float64))
            ),
            "tensor-mismatch",
        ),
        (
            lambda c: c.__setitem__("metrics", MetricRecord({"seconds": math.nan})),
            "non-finite-metric",
        ),
        (
            lambda c: c.__setitem__("metrics", MetricRecord({"auc": -math.inf})),
            "non-finite-metric",
        ),
        (
            lambda c: c.__setitem__(
                "metrics", MetricRecord({f"m{i}": 0.0 for i in range(5000)})
            ),
            "oversized-reply",
        ),
        (
            lambda c: c.__setitem__("metrics", ConfigRecord({"seconds": "soon"})),
            "malformed-reply",
        ),
    ],
)
def test_a_malformed_reply_is_refused_by_name(setup, edit, reason):
    keys, strategy = setup
    asked = ask(strategy, [1, 2])
    replies = [
        _damaged(answer(asked[1], keys["site-a"], "site-a"), edit),
        answer(asked[2], keys["site-b"], "site-b"),  # the round goes on with it
    ]
    out = strategy.aggregate_train_outcome(replies, asked.values())
    assert list(out.accepted) == [2]
    assert f"({reason})" in out.refused[0].reason


def test_a_site_that_restarts_and_resends_keeps_its_accepted_package(setup):
    keys, strategy = setup
    asked = ask(strategy, [1])
    first = answer(asked[1], keys["site-a"], "site-a")
    again = answer(asked[1], keys["site-a"], "site-a")  # the same answer, resent
    out = strategy.aggregate_train_outcome([first, again], asked.values())
    assert list(out.accepted) == [1] and out.refused == []
