"""Account, byte by byte, for what a site's SuperNode sent to the SuperLink.

Input: the connections a :class:`~simulation.recording_proxy.RecordingProxy`
recorded (ciphertext count and plaintext). Flower 1.41's SuperNode speaks
protobuf over HTTP/1.1 to the SuperLink's Fleet API, and a message's content
travels only as Flower's content-addressed objects (``PushObject``). The layers
are peeled in order, and every byte lands in exactly one category:

- ``tls``: TLS records and handshake (ciphertext minus plaintext);
- ``http``: HTTP/1.1 request lines, headers and chunk framing (parsed by h11);
- ``flower_protocol``: the Fleet API requests (registration, heartbeats, pulls,
  message metadata, object trees) and every object's head, plus the bodies of
  the structural objects (Message, RecordDict, ArrayRecord, Array);
- ``manifest``: the package's signed manifest, signature and site id, or a
  refusal's reasons (the ConfigRecord of a reply);
- ``metrics``: the whitelisted aggregate metrics (the MetricRecord of a reply);
- ``generator_tensors``: the raw tensor bytes in the array chunks of the
  ``generator`` record (each array's ``.npy`` header is protocol), which must
  rebuild exactly the shipped state dict;
- ``unaccounted``: anything else, with the reason in
  :attr:`EgressAccount.unaccounted_reasons`. A private site has none.

Objects are rebuilt with Flower's own inflation, so the check is on what the
SuperLink would see, not on our reading of the format.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import h11
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.proto.fleet_pb2 import PushMessagesRequest
from flwr.proto.message_pb2 import PushObjectRequest
from flwr.supercore.constant import HEAD_BODY_DIVIDER
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.protobuf.translation import PROTOBUF_REQUEST_TYPES
from google.protobuf.message import DecodeError

from medsynth_fl.wire import Record
from simulation.recording_proxy import RecordedConnection

CATEGORIES = (
    "tls",
    "http",
    "flower_protocol",
    "manifest",
    "metrics",
    "generator_tensors",
    "unaccounted",
)
FLEET_PREFIX = "/v1/fleet/"
# Which record of a reply may carry what; any other record is unaccounted.
RECORD_CATEGORY = {
    (Record.GENERATOR, ArrayRecord): "generator_tensors",
    (Record.PACKAGE, ConfigRecord): "manifest",
    (Record.REFUSAL, ConfigRecord): "manifest",
    (Record.METRICS, MetricRecord): "metrics",
}


@dataclass
class EgressAccount:
    """Bytes one SuperNode sent, by category, and how they were read."""

    bytes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    ciphertext_bytes: int = 0
    requests: Counter = field(default_factory=Counter)  # Fleet API path -> count
    replies: list[Message] = field(default_factory=list)  # rebuilt pushed messages
    unaccounted_reasons: list[str] = field(default_factory=list)

    def add(self, category: str, n: int) -> None:
        """File ``n`` bytes under ``category``."""
        self.bytes[category] += n

    def refuse(self, n: int, reason: str) -> None:
        """File ``n`` bytes as unaccounted, saying why."""
        self.bytes["unaccounted"] += n
        self.unaccounted_reasons.append(f"{reason} ({n} B)")

    def to_json(self) -> dict:
        """Plain data for a report."""
        return {
            "ciphertext_bytes": self.ciphertext_bytes,
            "bytes": dict(self.bytes),
            "requests": dict(sorted(self.requests.items())),
            "replies": len(self.replies),
            "unaccounted_reasons": self.unaccounted_reasons,
        }


def account_egress(
    connections: Iterable[RecordedConnection],
    shipped: Mapping[str, np.ndarray] | None,
) -> EgressAccount:
    """Account for every byte of one site's ``connections``.

    ``shipped`` is the state dict of the generator package the coordinator stored
    for this site (``None`` where it stored none): a generator record must
    rebuild exactly these tensors, or its bytes are unaccounted.
    """
    return account_sites({"site": connections}, {"site": shipped})["site"]


def account_sites(
    connections: Mapping[str, Iterable[RecordedConnection]],
    shipped: Mapping[str, Mapping[str, np.ndarray] | None],
) -> dict[str, EgressAccount]:
    """Account for every byte each site sent (site id -> its connections).

    A SuperNode pushes only the objects the SuperLink does not hold yet, and
    objects are content-addressed: a chunk another site already pushed (say an
    all-zero bias) is not sent again. Messages are therefore rebuilt from the
    objects every site pushed, while each site is charged only for its own bytes.
    """
    accounts, pushed, roots = {}, {}, {}
    pool: dict[str, bytes] = {}
    for site, conns in connections.items():
        account, objects, site_roots = EgressAccount(), {}, []
        for conn in conns:
            account.ciphertext_bytes += conn.ciphertext_bytes
            account.add("tls", conn.ciphertext_bytes - len(conn.plaintext))
            for path, body in _http_requests(bytes(conn.plaintext), account):
                _account_request(path, body, account, objects, site_roots)
        accounts[site], pushed[site], roots[site] = account, objects, site_roots
        pool.update({oid: contents[0] for oid, contents in objects.items()})
    for site, account in accounts.items():
        _account_objects(pushed[site], roots[site], shipped.get(site), account, pool)
        total = sum(account.bytes.values())
        if total != account.ciphertext_bytes:  # the categories must cover every byte
            raise AssertionError(
                f"{site}: accounted {total} of {account.ciphertext_bytes} bytes"
            )
    return accounts


def _http_requests(plaintext: bytes, account: EgressAccount) -> list[tuple[str, bytes]]:
    """Split one connection's plaintext into ``(path, body)`` of each request.

    Everything that is not a request body is HTTP framing. A request cut off by
    a killed process, or bytes h11 cannot parse, are unaccounted.
    """
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(plaintext)
    requests: list[tuple[str, bytes]] = []
    path, body, bodies = "", bytearray(), 0
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                break
            if event is h11.PAUSED:  # the client waits for a response: fake one
                conn.send(
                    h11.Response(status_code=200, headers=[("content-length", "0")])
                )
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            elif isinstance(event, h11.Request):
                if event.method != b"POST":
                    raise h11.RemoteProtocolError(f"unexpected {event.method!r}")
                path = event.target.decode("ascii", "replace")
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                requests.append((path, bytes(body)))
                bodies += len(body)
                body.clear()
    except h11.ProtocolError as err:
        consumed = len(plaintext) - len(conn.trailing_data[0])
        account.add("http", consumed - bodies - len(body))
        account.refuse(len(body) + len(conn.trailing_data[0]), f"not HTTP/1.1: {err}")
        return requests
    leftover = len(conn.trailing_data[0])
    account.add("http", len(plaintext) - bodies - len(body) - leftover)
    if body or leftover:
        account.refuse(len(body) + leftover, f"request to {path or '?'} cut off")
    return requests


def _account_request(
    path: str,
    body: bytes,
    account: EgressAccount,
    objects: dict[str, list[bytes]],
    roots: list[str],
) -> None:
    """File one Fleet API request body; keep pushed objects for later."""
    request_type = PROTOBUF_REQUEST_TYPES.get(("POST", path))
    if not path.startswith(FLEET_PREFIX) or request_type is None:
        account.refuse(len(body), f"not a Fleet API request: {path[:80]}")
        return
    try:
        request = request_type.FromString(body)
    except DecodeError:
        account.refuse(len(body), f"{path}: not a {request_type.__name__}")
        return
    account.requests[path] += 1
    if isinstance(request, PushObjectRequest):
        content = request.object_content
        if hashlib.sha256(content).hexdigest() != request.object_id:
            account.refuse(len(body), f"object {request.object_id[:12]} mislabelled")
            return
        account.add("flower_protocol", len(body) - len(content))
        objects.setdefault(request.object_id, []).append(content)
        return
    if isinstance(request, PushMessagesRequest):
        inline = sum(
            m.content.ByteSize() for m in request.messages_list if m.HasField("content")
        )
        if inline:
            account.refuse(inline, "message content sent inline, outside objects")
        account.add("flower_protocol", len(body) - inline)
        roots.extend(tree.object_id for tree in request.message_object_trees)
        return
    account.add("flower_protocol", len(body))


def _account_objects(
    objects: dict[str, list[bytes]],
    roots: list[str],
    shipped: Mapping[str, np.ndarray] | None,
    account: EgressAccount,
    pool: Mapping[str, bytes],
) -> None:
    """Rebuild every pushed message and file each object's body by its record.

    ``pool`` holds every object any site pushed (the SuperLink's store).
    """
    category: dict[str, str] = {}  # object id -> category of its body
    npy_header: dict[str, int] = {}  # chunk id -> serialisation header it holds
    contents = dict(pool)
    for root in dict.fromkeys(roots):
        inflated: dict = {}
        try:
            message = inflate_object_from_contents(
                root, dict(contents), keep_object_contents=True, objects=inflated
            )
        except (KeyError, ValueError) as err:
            account.unaccounted_reasons.append(
                f"message {root[:12]} not rebuilt: {err}"
            )
            continue
        if not isinstance(message, Message):
            continue
        account.replies.append(message)
        category[root] = "flower_protocol"
        stray = [
            name
            for name, record in message.content.items()
            if (name, type(record)) not in RECORD_CATEGORY
        ]
        if stray:  # the record list itself is then unaccounted, even at 0 new bytes
            account.unaccounted_reasons.append(f"records outside the protocol: {stray}")
        else:
            category[message.content.object_id] = "flower_protocol"
        for name, record in message.content.items():
            kind = RECORD_CATEGORY.get((name, type(record)))
            if kind is None:
                continue  # its own objects stay unfiled: unaccounted below
            if kind != "generator_tensors":
                category[record.object_id] = kind
                continue
            category[record.object_id] = "flower_protocol"  # its keys and order
            if not _is_shipped(record, shipped):
                account.unaccounted_reasons.append(
                    f"record {name!r} differs from the shipped generator"
                )
                continue
            for array in record.values():
                category[array.object_id] = "flower_protocol"
                chunks = [cid for cid, _ in array.slice_array()]
                category.update(dict.fromkeys(chunks, "generator_tensors"))
                # the first chunk opens with the array's .npy header
                npy_header[chunks[0]] = len(array.data) - array.numpy().nbytes
    for oid, pushes in objects.items():
        for content in pushes:
            head = content.index(HEAD_BODY_DIVIDER) + len(HEAD_BODY_DIVIDER)
            account.add("flower_protocol", head)
            body, kind = len(content) - head, category.get(oid)
            if kind is None:
                account.refuse(body, f"object {oid[:12]} outside any allowed record")
                continue
            framing = npy_header.get(oid, 0)
            account.add("flower_protocol", framing)
            account.add(kind, body - framing)


def _is_shipped(record: ArrayRecord, shipped: Mapping[str, np.ndarray] | None) -> bool:
    """Whether ``record`` holds exactly the shipped tensors, bit for bit."""
    if shipped is None or set(record) != set(shipped):
        return False
    for name, array in record.items():
        sent, expected = array.numpy(), np.asarray(shipped[name])
        if sent.dtype != expected.dtype or sent.shape != expected.shape:
            return False
        if sent.tobytes() != expected.tobytes():
            return False
    return True
