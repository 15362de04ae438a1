"""The coordinator's Flower strategy: ask sites for generators, verify, never average.

It subclasses Flower's FedAvg to reuse its message construction, error-reply
separation and weighted aggregation of evaluation metrics; only the train step
is MedSynth's own: ``aggregate_train_outcome`` verifies every package (schema,
Ed25519 signature against the registered site keys, shapes, hash, size) and keeps the
accepted and rejected ones, with reasons, for the round function to persist.
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
    verify_package,
)

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
    if "refusal" in content and "generator" not in content:
        refusal = content["refusal"]
        raise PackageRejected(
            f"withheld by the site's release gate: {refusal.get('reasons', '')}"
        )
    try:
        arrays = content["generator"]
        meta = content["package"]
        metrics = dict(content["metrics"]) if "metrics" in content else {}
        tensors = {k: torch.from_numpy(a.numpy().copy()) for k, a in arrays.items()}
        manifest, signature = str(meta["manifest"]), str(meta["signature"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageRejected(f"reply is not a package: {exc!r}") from None
    return verify_package(manifest, signature, tensors, trusted, max_bytes), metrics


def _claimed_site_id(msg: Message) -> str:
    """The site id a refusal reply names ("" for any other reply).

    A withheld generator carries no signed manifest, so this id is what the
    node says it is; the store records it so the dashboard can name the site.
    """
    try:
        return str(msg.content["refusal"]["site-id"])
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

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Ask the given nodes for their generators.

        ``config['nodes']`` is not sent.
        """
        request = ConfigRecord({k: v for k, v in config.items() if k != "nodes"})
        request["server-round"] = server_round
        nodes = (
            list(config["nodes"]) if "nodes" in config else list(grid.get_node_ids())
        )
        return self._construct_messages(
            RecordDict({"config": request}), nodes, MessageType.TRAIN
        )

    def aggregate_train_outcome(self, replies: Iterable[Message]) -> TrainOutcome:
        """Separate error replies, verify packages, refuse duplicates of a site."""
        valid, errors = self._check_and_log_replies(
            list(replies), is_train=True, validate=False
        )
        outcome = TrainOutcome()
        for msg in errors:
            outcome.refused.append(
                Refusal(
                    msg.metadata.src_node_id, "", f"error reply: {msg.error.reason}"
                )
            )
        seen: set[str] = set()
        for msg in valid:
            node = msg.metadata.src_node_id
            try:
                pkg, metrics = _package_from_reply(
                    msg, self.trusted, self.max_package_bytes
                )
            except PackageRejected as exc:
                log.warning("node %s: %s", node, exc)
                outcome.refused.append(Refusal(node, _claimed_site_id(msg), str(exc)))
                continue
            site = pkg.manifest.site_id
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
