"""The coordinator's Flower strategy: ask sites for generators, verify, never average.

It subclasses Flower's FedAvg for its weighted aggregation of evaluation
metrics (public API only); the train step is MedSynth's own. ``configure_train``
sends every node its own fresh nonce; ``aggregate_train_outcome`` verifies
every package (schema, Ed25519 signature against the registered site keys,
shapes, hash, size), checks that it answers the request sent to that node
(run, round, nonce), and keeps the accepted and rejected ones, with reasons,
for the round function to persist.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from medsynth_fl.package import (
    GeneratorPackage,
    KeyRing,
    PackageRejected,
    Release,
    check_release,
    issue_release,
    verify_package,
)
from medsynth_fl.wire import Key, Record

from .replies import MalformedReply, ReplyRefused, reply_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Refusal:
    """A node whose reply was not accepted, and why."""

    node_id: int
    site_id: str
    reason: str


@dataclass
class TrainOutcome:
    """Packages accepted and refused in one train round."""

    accepted: dict[int, tuple[GeneratorPackage, dict[str, float]]] = field(
        default_factory=dict
    )
    refused: list[Refusal] = field(default_factory=list)


def _package_from_reply(
    msg: Message, trusted: KeyRing, max_bytes: int
) -> tuple[GeneratorPackage, dict]:
    content = msg.content
    if Record.REFUSAL in content and Record.GENERATOR not in content:
        refusal = content[Record.REFUSAL]
        raise PackageRejected(
            f"withheld by the site's release gate: {refusal.get('reasons', '')}"
        )
    metrics = reply_metrics(msg) if Record.METRICS in content else {}
    try:
        arrays = content[Record.GENERATOR]
        meta = content[Record.PACKAGE]
        tensors = {k: torch.from_numpy(a.numpy().copy()) for k, a in arrays.items()}
        manifest, signature = str(meta[Key.MANIFEST]), str(meta[Key.SIGNATURE])
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedReply(f"not a package: {exc!r}") from None
    return verify_package(manifest, signature, tensors, trusted, max_bytes), metrics


def _claimed_site_id(msg: Message) -> str:
    """The site id a refusal reply names ("" for any other reply).

    A withheld generator carries no signed manifest, so this id is what the
    node says it is; the store records it so the dashboard can name the site.
    """
    try:
        return str(msg.content[Record.REFUSAL][Key.SITE_ID])
    except (KeyError, TypeError):
        return ""


class MedSynthStrategy(FedAvg):
    """One generator request per site; verification instead of aggregation.

    Parameters
    ----------
    trusted : the registered site public keys.
    max_package_bytes : refuse larger packages.
    min_sites : least number of sites the round needs.
    """

    def __init__(self, trusted: KeyRing, max_package_bytes: int, min_sites: int):
        super().__init__(
            min_train_nodes=min_sites, min_evaluate_nodes=1, min_available_nodes=1
        )
        self.trusted = trusted
        self.max_package_bytes = max_package_bytes
        self.min_sites = min_sites
        self.challenges: dict[int, Release] = {}  # node → its request's binding

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the given nodes for their generators, each with its own nonce.

        ``config['nodes']`` (default: every connected node) is not sent;
        ``config['run-id']`` names the run the packages must be bound to.
        """
        nodes = (
            list(config["nodes"]) if "nodes" in config else list(grid.get_node_ids())
        )
        run_id = str(config.get(Key.RUN_ID, "run"))
        self.challenges = {}
        messages = []
        for node in nodes:
            release = issue_release(run_id, server_round)
            self.challenges[node] = release
            request = ConfigRecord({k: v for k, v in config.items() if k != "nodes"})
            request.update(
                {
                    Key.SERVER_ROUND: server_round,
                    Key.RUN_ID: run_id,
                    Key.NONCE: release.nonce,
                }
            )
            messages.append(
                Message(
                    RecordDict({Record.CONFIG: request}),
                    dst_node_id=node,
                    message_type=MessageType.TRAIN,
                )
            )
        return messages

    def aggregate_train_outcome(
        self, replies: Iterable[Message], sent: Iterable[Message] = ()
    ) -> TrainOutcome:
        """Verify packages, check their binding, refuse duplicates of a site.

        ``sent``: the requests (as pushed, with their message ids); a reply to
        none of them is refused.
        """
        sent_ids = {m.metadata.message_id for m in sent}
        issued = {r.nonce: node for node, r in self.challenges.items()}
        outcome = TrainOutcome()
        seen: set[str] = set()
        for msg in replies:
            node = msg.metadata.src_node_id
            if sent_ids and msg.metadata.reply_to_message_id not in sent_ids:
                outcome.refused.append(
                    Refusal(
                        node,
                        "",
                        "reply refused (unsolicited-reply): it answers a request "
                        "this round never sent",
                    )
                )
                continue
            if msg.has_error():
                outcome.refused.append(
                    Refusal(node, "", f"error reply: {msg.error.reason}")
                )
                continue
            try:
                pkg, metrics = _package_from_reply(
                    msg, self.trusted, self.max_package_bytes
                )
                expected = self.challenges.get(node)
                if expected is None:
                    raise PackageRejected(f"node {node} was not asked in this round")
                check_release(pkg.manifest, expected, issued)
            except (PackageRejected, ReplyRefused) as exc:
                log.warning("node %s: %s", node, exc)
                outcome.refused.append(Refusal(node, _claimed_site_id(msg), str(exc)))
                continue
            site = pkg.manifest.site_id
            if node in outcome.accepted:  # a restarted site sending again
                log.info("node %s: sent its package again; kept the first", node)
                continue
            if site in seen:
                outcome.refused.append(
                    Refusal(node, site, "another node already sent this site's package")
                )
                continue
            seen.add(site)
            outcome.accepted[node] = (pkg, metrics)
        return outcome

    def summary(self) -> None:
        """Log the strategy's settings."""
        log.info(
            "MedSynthStrategy: min_sites=%d, max_package_bytes=%d, registered sites=%s",
            self.min_sites,
            self.max_package_bytes,
            self.trusted.site_ids,
        )
