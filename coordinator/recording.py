"""Recording what a round's replies said, in the run store.

:mod:`coordinator.rounds` orchestrates the stages; this module turns their
outcomes into site records, metrics and events: accepted packages written and
recorded, refusals with their reasons, unreachable nodes, quarantines.
"""

from __future__ import annotations

import dataclasses

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID

from medsynth_fl.package import write_package
from medsynth_fl.wire import Metric, Record

from .store import RunStore, SiteRecord
from .strategy import MedSynthStrategy

LATE_REASON = "answered after the timeout: package verified and stored, not used"


def reply_bytes(msg: Message) -> int:
    """Bytes of a package reply's tensors and config values (what a site sent)."""
    arrays = msg.content[Record.GENERATOR] if Record.GENERATOR in msg.content else {}
    config = msg.content[Record.PACKAGE] if Record.PACKAGE in msg.content else {}
    return sum(len(a.data) for a in arrays.values()) + sum(
        len(str(v)) for v in config.values()
    )


def split_unavailable(
    replies: list[Message], sent: list[Message]
) -> tuple[list[Message], dict[int, str]]:
    """Separate the SuperLink's own "node unavailable" error replies.

    Flower answers for an offline node itself (source = the SuperLink), so the
    node is found again through the id of the request it answers.
    """
    dst = {m.metadata.message_id: m.metadata.dst_node_id for m in sent}
    own, unavailable = [], {}
    for msg in replies:
        if msg.has_error() and msg.metadata.src_node_id == SUPERLINK_NODE_ID:
            node = dst.get(msg.metadata.reply_to_message_id, SUPERLINK_NODE_ID)
            unavailable[node] = msg.error.reason
        else:
            own.append(msg)
    return own, unavailable


def record_train_outcome(
    store: RunStore,
    strategy: MedSynthStrategy,
    replies: list[Message],
    sent: list[Message],
    unavailable: dict[int, str],
    accepted_as: str = "accepted",
) -> None:
    """Record every asked node's outcome: accepted, refused, or unreachable.

    ``accepted_as="late"`` records verified packages that came after the
    round's timeout: stored, so nothing is lost, but not used in this round.
    """
    for node, reason in unavailable.items():
        store.record_site(
            SiteRecord(node, "", "unreachable", reason, "", "", 0, [], 0, 0.0)
        )
        store.log("warning", f"node {node}: unreachable: {reason}")
    outcome = strategy.aggregate_train_outcome(replies, sent)
    sizes = {
        m.metadata.src_node_id: reply_bytes(m) for m in replies if not m.has_error()
    }
    for node, (pkg, metrics) in outcome.accepted.items():
        path = write_package(
            pkg, store.dir / "packages" / f"{pkg.manifest.site_id}.msfl"
        )
        m = pkg.manifest
        store.record_site(
            SiteRecord(
                node,
                m.site_id,
                accepted_as,
                "" if accepted_as == "accepted" else LATE_REASON,
                str(path),
                m.weights.sha256,
                m.training.n_images,
                list(m.classes_present),
                sizes.get(node, 0),
                float(metrics.get(Metric.SECONDS, 0.0)),
            )
        )
        store.log("info", f"node {node}: {accepted_as} package of site {m.site_id}")
    for r in outcome.refused:
        store.record_site(
            SiteRecord(
                r.node_id,
                r.site_id,
                "rejected",
                r.reason,
                "",
                "",
                0,
                [],
                sizes.get(r.node_id, 0),
                0.0,
            )
        )
        store.log("warning", f"node {r.node_id}: refused: {r.reason}")
    for node in sorted(
        m.metadata.dst_node_id for m in unanswered(sent, replies, unavailable)
    ):
        store.record_site(
            SiteRecord(
                node,
                "",
                "unreachable",
                "no reply before the timeout",
                "",
                "",
                0,
                [],
                0,
                0.0,
            )
        )
        store.log("warning", f"node {node}: no reply before the timeout")


def unanswered(
    sent: list[Message], replies: list[Message], unavailable: dict[int, str]
) -> list[Message]:
    """The requests no reply answered in time (their replies may still come)."""
    replied = {m.metadata.src_node_id for m in replies} | set(unavailable)
    return [m for m in sent if m.metadata.dst_node_id not in replied]


def quarantine(store: RunStore, site: str, reason: str) -> None:
    """Keep an accepted site's generator out of the shared model, saying why."""
    rec = next(r for r in store.sites("accepted") if r.site_id == site)
    store.record_site(dataclasses.replace(rec, status="quarantined", reason=reason))
    store.log("warning", f"site {site}: quarantined ({reason})")
