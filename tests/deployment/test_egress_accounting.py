"""Known-answer tests of the byte-by-byte egress accounting on built traffic.

The traffic is what a SuperNode sends when it pushes a reply: Flower's own
object deflation of a real package reply, in Fleet API requests over HTTP/1.1
(serialised by h11 as a client). The loopback deployment test runs the same
accounting on captured TLS traffic.
"""

from __future__ import annotations

import uuid

import h11
import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.app.message import remove_content_from_message
from flwr.common.serde import message_to_proto
from flwr.proto.fleet_pb2 import PushMessagesRequest
from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatRequest
from flwr.proto.message_pb2 import PushObjectRequest
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    get_object_tree,
)
from flwr.supercore.task_identity import TaskIdentity

from medsynth_fl.package import generate_site_key
from medsynth_fl.wire import Record
from simulation.egress_accounting import account_egress, account_sites
from simulation.recording_proxy import RecordedConnection
from site_client.egress import package_reply

from ..package.test_package import make_package

TLS_OVERHEAD = 777  # stands in for the handshake and record headers


def _http(requests: list[tuple[str, bytes]]) -> bytes:
    """The bytes an HTTP/1.1 client writes for ``(path, body)`` POSTs."""
    client = h11.Connection(h11.CLIENT)
    out = bytearray()
    for path, body in requests:
        out += client.send(
            h11.Request(
                method="POST",
                target=path,
                headers=[
                    ("host", "127.0.0.1:9092"),
                    ("content-type", "application/protobuf"),
                    ("content-length", str(len(body))),
                ],
            )
        )
        out += client.send(h11.Data(data=body))
        out += client.send(h11.EndOfMessage())
        client.receive_data(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        while not isinstance(client.next_event(), h11.EndOfMessage):
            pass
        client.start_next_cycle()
    return bytes(out)


def _push(message: Message, held: frozenset = frozenset()) -> list[tuple[str, bytes]]:
    """The Fleet API requests that push ``message`` (as the SuperNode does).

    Objects in ``held`` (ids the SuperLink already stores) are not pushed.
    """
    tree = get_object_tree(message)
    objects = {
        oid: obj
        for oid, obj in get_all_nested_objects(message).items()
        if oid not in held
    }
    requests = [
        (
            "/v1/fleet/push-messages",
            PushMessagesRequest(
                messages_list=[message_to_proto(remove_content_from_message(message))],
                message_object_trees=[tree],
            ).SerializeToString(),
        )
    ]
    for oid, obj in objects.items():
        request = PushObjectRequest(
            run_id=1, object_id=oid, object_content=obj.deflate()
        )
        requests.append(("/v1/fleet/push-object", request.SerializeToString()))
    return requests


def _connection(requests: list[tuple[str, bytes]]) -> RecordedConnection:
    plaintext = _http(requests)
    return RecordedConnection(len(plaintext) + TLS_OVERHEAD, bytearray(plaintext))


def _reply(tmp_path, site_id: str = "site-a"):
    """A site's package reply to a train request, and the shipped state dict."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    key = generate_site_key(tmp_path / f"{site_id}.pem")
    pkg = make_package(key, site_id=site_id)[1]
    request = Message(RecordDict(), dst_node_id=7, message_type="train")
    request.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # as Grid.push does
    message = package_reply(request, pkg, {"num-examples": 5.0, "seconds": 1.5})
    shipped = {k: v.numpy() for k, v in pkg.tensors.items()}
    return message, shipped


@pytest.fixture
def reply(tmp_path):
    return _reply(tmp_path)


def _distinct(state: dict) -> set:
    return {(v.dtype.str, v.shape, v.tobytes()) for v in state.values()}


def test_every_byte_of_a_package_reply_is_accounted(reply):
    message, shipped = reply
    heartbeat = (
        "/v1/fleet/send-node-heartbeat",
        SendNodeHeartbeatRequest().SerializeToString(),
    )
    account = account_egress([_connection([heartbeat, *_push(message)])], shipped)

    assert account.bytes["unaccounted"] == 0, account.unaccounted_reasons
    assert account.bytes["tls"] == TLS_OVERHEAD
    assert sum(account.bytes.values()) == account.ciphertext_bytes
    # each distinct chunk travels once, so tensors whose bytes repeat another's
    # (two all-zero biases of one shape) are counted once: at most the state dict
    tensor_bytes = sum(v.nbytes for v in shipped.values())
    distinct = {(v.dtype.str, v.shape, v.tobytes()) for v in shipped.values()}
    assert account.bytes["generator_tensors"] == sum(len(d[2]) for d in distinct)
    assert account.bytes["generator_tensors"] <= tensor_bytes
    manifest = message.content[Record.PACKAGE]["manifest"]
    assert account.bytes["manifest"] > len(manifest)
    assert 0 < account.bytes["metrics"] < 200
    assert account.requests["/v1/fleet/push-messages"] == 1
    assert len(account.replies) == 1


def test_an_extra_record_is_unaccounted(reply):
    message, shipped = reply
    critic = ArrayRecord({"w": Array(np.ones((8, 8), np.float32))})
    message.content["critic"] = critic
    account = account_egress([_connection(_push(message))], shipped)
    assert account.bytes["unaccounted"] > critic["w"].numpy().nbytes
    reasons = " ".join(account.unaccounted_reasons)
    assert "records outside the protocol: ['critic']" in reasons
    assert "outside any allowed record" in reasons


def test_a_renamed_copy_of_the_generator_is_caught_at_zero_extra_bytes(reply):
    # content addressing sends a copy's objects once; the record name still shows
    message, shipped = reply
    message.content["critic"] = message.content[Record.GENERATOR].copy()
    account = account_egress([_connection(_push(message))], shipped)
    assert account.bytes["unaccounted"] > 0
    assert any("['critic']" in r for r in account.unaccounted_reasons)


def test_a_generator_that_differs_from_the_package_is_unaccounted(reply):
    message, shipped = reply
    name = next(iter(shipped))
    record = message.content[Record.GENERATOR]
    record[name] = Array(record[name].numpy() + 1)
    account = account_egress([_connection(_push(message))], shipped)
    assert account.bytes["unaccounted"] > 0
    assert account.bytes["generator_tensors"] == 0
    assert any(
        "differs from the shipped generator" in r for r in account.unaccounted_reasons
    )


def test_a_non_fleet_request_and_a_cut_off_request_are_unaccounted(reply):
    message, shipped = reply
    requests = [("/upload", b"\x89PNG" + bytes(100)), *_push(message)]
    plaintext = _http(requests)
    cut = plaintext[: len(plaintext) - 10]  # the process was killed mid-request
    account = account_egress([RecordedConnection(len(cut), bytearray(cut))], shipped)
    reasons = " ".join(account.unaccounted_reasons)
    assert "not a Fleet API request: /upload" in reasons
    assert "cut off" in reasons
    assert sum(account.bytes.values()) == account.ciphertext_bytes


def test_a_site_that_shipped_nothing_may_send_no_tensor(reply):
    message, _ = reply
    account = account_egress([_connection(_push(message))], shipped=None)
    assert account.bytes["generator_tensors"] == 0
    assert account.bytes["unaccounted"] > 0
    assert np.isfinite(account.ciphertext_bytes)


def test_a_chunk_another_site_pushed_first_is_charged_to_that_site_only(tmp_path):
    (msg_a, shipped_a), (msg_b, shipped_b) = _reply(tmp_path), _reply(tmp_path, "b")
    # the SuperLink already holds site a's objects: b skips the ones it shares
    # (all-zero biases and unit norms of the same shape, protocol objects)
    held = frozenset(get_all_nested_objects(msg_a))
    shared = _distinct(shipped_a) & _distinct(shipped_b)
    assert shared, "the two generators must share some tensors for this test"
    accounts = account_sites(
        {"a": [_connection(_push(msg_a))], "b": [_connection(_push(msg_b, held))]},
        {"a": shipped_a, "b": shipped_b},
    )
    a, b = accounts["a"], accounts["b"]
    assert a.bytes["unaccounted"] == b.bytes["unaccounted"] == 0, (
        a.unaccounted_reasons + b.unaccounted_reasons
    )
    assert len(b.replies) == 1  # rebuilt with a's objects
    # each site pays for the distinct tensors it pushed, and nothing else
    assert a.bytes["generator_tensors"] == sum(len(d[2]) for d in _distinct(shipped_a))
    assert b.bytes["generator_tensors"] == sum(
        len(d[2]) for d in _distinct(shipped_b) - shared
    )
    # alone, b's reply cannot be rebuilt: its missing objects are nobody's
    alone = account_sites({"b": [_connection(_push(msg_b, held))]}, {"b": shipped_b})[
        "b"
    ]
    assert alone.bytes["generator_tensors"] == 0
    assert any("not rebuilt" in r for r in alone.unaccounted_reasons)
