"""The MedSynth round, stage by stage.

Collect and verify generators, audit them at their sites, sample, train the
shared ViT, evaluate it centrally and at the sites. Every result is persisted
as it arrives (:mod:`coordinator.recording`), so each stage resumes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from torch import nn

from medsynth_fl.config import Config
from medsynth_fl.data.imageset import ImageSet
from medsynth_fl.package import GeneratorPackage, read_package
from medsynth_fl.privacy import build_package_attacks, gate_limits, leaking_attacks
from medsynth_fl.wire import Key, Metric, Record

from .dashboard import render_dashboard
from .pipeline import (
    evaluate_central,
    sample_site,
    site_contributions,
    train_shared_vit,
)
from .recording import (
    quarantine,
    record_train_outcome,
    split_unavailable,
    unanswered,
)
from .replies import ReplyRefused, reply_metrics
from .store import CENTRAL_REPORT, PENDING_REQUESTS, RunStore
from .strategy import MedSynthStrategy

log = logging.getLogger(__name__)


class NotEnoughSites(RuntimeError):
    """Fewer verified packages than the run's minimum."""


@dataclass(frozen=True)
class RoundSettings:
    """What the round needs besides the config."""

    timeout_s: float
    test_set: Path | None = None


def wait_for_nodes(grid: Grid, minimum: int, timeout_s: float) -> list[int]:
    """Connected node ids, waiting up to ``timeout_s`` for ``minimum`` of them."""
    deadline = time.monotonic() + timeout_s
    nodes = list(grid.get_node_ids())
    while len(nodes) < minimum and time.monotonic() < deadline:
        time.sleep(1.0)
        nodes = list(grid.get_node_ids())
    return nodes


def collect_packages(
    grid: Grid,
    strategy: MedSynthStrategy,
    store: RunStore,
    cfg: Config,
    timeout_s: float,
) -> dict[str, GeneratorPackage]:
    """Verified packages by site id; asks only nodes without a verified package."""
    if store.stage_done("collect") is None:
        delivered = {r.node_id for r in store.sites("accepted")}
        nodes = [
            n
            for n in wait_for_nodes(grid, cfg.federation.min_sites, timeout_s)
            if n not in delivered
        ]
        if nodes:
            request = ConfigRecord({"nodes": nodes, Key.RUN_ID: store.run_id})
            messages = list(strategy.configure_train(1, ArrayRecord(), request, grid))
            replies, unavailable = split_unavailable(
                list(grid.send_and_receive(messages, timeout=timeout_s)), messages
            )
            record_train_outcome(store, strategy, replies, messages, unavailable)
            store.write_json(
                PENDING_REQUESTS,
                {
                    "message_ids": [
                        m.metadata.message_id
                        for m in unanswered(messages, replies, unavailable)
                    ]
                },
            )
    accepted = store.sites("accepted")
    if len(accepted) < cfg.federation.min_sites:
        raise NotEnoughSites(
            f"{len(accepted)} verified package(s), "
            f"the run needs {cfg.federation.min_sites}; "
            f"see the sites table of run {store.run_id!r} for the refusals"
        )
    store.finish_stage("collect", {"sites": [r.site_id for r in accepted]})
    return {
        r.site_id: read_package(
            Path(r.package_path), strategy.trusted, cfg.package.max_bytes
        )
        for r in accepted
    }


def _audit_message(pkg: GeneratorPackage, node: int, cfg: Config) -> Message:
    models = build_package_attacks(pkg, cfg.audit, cfg.training.seed)
    arrays, meta = models.to_state()
    content = RecordDict(
        {
            Record.ATTACK: ArrayRecord(
                {k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}
            ),
            Record.ATTACK_META: ConfigRecord(dict(meta)),
        }
    )
    return Message(content, dst_node_id=node, message_type="query.audit")


def collect_late_replies(
    grid: Grid, strategy: MedSynthStrategy, store: RunStore
) -> int:
    """Pick up generator replies that came after the timeout; record them as late.

    Flower keeps a reply on the SuperLink until it is pulled, so a site that
    finished condensing after the round's timeout has not lost its work: its
    package is verified (signature, binding to the request it answers) and
    stored with status ``late``, for the consortium to see and a later run to
    use. It is not used in this round, whose shared model is already trained.
    Returns how many late replies came.
    """
    pending = (store.read_json(PENDING_REQUESTS) or {}).get("message_ids", [])
    if not pending:
        return 0
    late, _ = split_unavailable(list(grid.pull_messages(pending)), [])
    taken = {r.site_id for r in store.sites() if r.status in ("accepted", "late")}
    fresh = [m for m in late if _package_site_id(m) not in taken]
    if fresh:
        record_train_outcome(store, strategy, fresh, [], {}, accepted_as="late")
    store.write_json(PENDING_REQUESTS, {"message_ids": []})
    return len(fresh)


def _package_site_id(msg: Message) -> str:
    """The site id a package reply names, unverified ("" for any other reply)."""
    package = msg.content[Record.PACKAGE] if Record.PACKAGE in msg.content else {}
    return str(package.get(Key.SITE_ID, "")) if package else ""


def federated_audit(
    grid: Grid,
    store: RunStore,
    packages: dict[str, GeneratorPackage],
    cfg: Config,
    timeout_s: float,
) -> dict[str, GeneratorPackage]:
    """Audit every accepted generator at its own site; quarantine the ones that leak.

    The coordinator builds the attacks it can from the generator alone and
    sends them to the site, which scores its own members against its held-out
    images and returns aggregate metrics. A generator with any leaking attack
    (AUC above ``audit.max_auc``, or its interval below ``1 − max_auc``; with
    ``audit.max_tpr_at_1pct_fpr`` set, a TPR interval above it) is kept out of
    the shared model.
    """
    node_of = {r.site_id: r.node_id for r in store.sites("accepted")}
    todo = {
        site: pkg
        for site, pkg in sorted(packages.items())
        if not store.metrics(f"audit:{site}")
    }
    messages = [_audit_message(pkg, node_of[site], cfg) for site, pkg in todo.items()]
    site_of = {node_of[site]: site for site in todo}
    replies, unavailable = split_unavailable(
        list(grid.send_and_receive(messages, timeout=timeout_s)), messages
    )
    for node, reason in unavailable.items():
        store.log(
            "warning",
            f"site {site_of.get(node, node)}: federated audit failed: {reason}",
        )
    for msg in replies:
        site = site_of.get(msg.metadata.src_node_id, str(msg.metadata.src_node_id))
        if msg.has_error():
            store.log(
                "warning", f"site {site}: federated audit failed: {msg.error.reason}"
            )
            continue
        try:
            metrics = reply_metrics(msg)
        except ReplyRefused as exc:
            # an audit that cannot be read cannot clear the generator
            quarantine(store, site, f"federated audit: {exc}")
            continue
        store.put_metrics(f"audit:{site}", metrics)
        leaks = leaking_attacks(
            metrics, cfg.audit.max_auc, cfg.audit.max_tpr_at_1pct_fpr
        )
        if leaks:
            limits = gate_limits(cfg.audit.max_auc, cfg.audit.max_tpr_at_1pct_fpr)
            quarantine(
                store, site, f"federated audit: {', '.join(leaks)} leak ({limits})"
            )
    store.finish_stage("audit")
    accepted = {r.site_id for r in store.sites("accepted")}
    return {s: p for s, p in packages.items() if s in accepted}


def federated_evaluate(
    grid: Grid,
    strategy: MedSynthStrategy,
    store: RunStore,
    model: nn.Module,
    cfg: Config,
    timeout_s: float,
) -> dict[str, float]:
    """Send the shared ViT to the contributing sites.

    Store and average their metrics.
    """
    done = store.stage_done("federated_eval")
    if done is not None:
        return done
    site_of = {r.node_id: r.site_id for r in store.sites("accepted")}
    nodes = [n for n in grid.get_node_ids() if n in site_of]
    config = ConfigRecord(
        {
            Key.CLASSIFIER: cfg.classifier.model_dump_json(),
            Key.NUM_CLASSES: len(cfg.data.classes),
            Key.IMAGE_SIZE: cfg.data.image_size,
        }
    )
    arrays = ArrayRecord(model.state_dict())
    messages = [
        m
        for m in strategy.configure_evaluate(1, arrays, config, grid)
        if m.metadata.dst_node_id in nodes
    ]
    replies = []
    for msg in grid.send_and_receive(messages, timeout=timeout_s):
        node = msg.metadata.src_node_id
        if msg.has_error():
            store.log("warning", f"node {node}: evaluation failed: {msg.error.reason}")
            continue
        try:
            metrics = reply_metrics(msg)
        except ReplyRefused as exc:  # left out of the average, not stored
            store.log("warning", f"site {site_of.get(node, node)}: {exc}")
            continue
        store.put_metrics(f"site:{site_of.get(node, node)}", metrics)
        replies.append(msg)
    aggregated = strategy.aggregate_evaluate(1, replies)
    result = {k: float(v) for k, v in (aggregated or {}).items()}
    if result:  # Flower's weighted mean drops the weights: keep their total
        result[Metric.NUM_EXAMPLES] = float(
            sum(
                dict(m.content[Record.METRICS]).get(Metric.NUM_EXAMPLES, 0)
                for m in replies
            )
        )
    store.put_metrics("federated", result)
    store.finish_stage("federated_eval", result)
    return result


def run_medsynth(
    grid: Grid,
    strategy: MedSynthStrategy,
    store: RunStore,
    cfg: Config,
    settings: RoundSettings,
) -> dict:
    """The whole MedSynth-FL round; resumable at every stage. Returns the summary."""
    packages = collect_packages(grid, strategy, store, cfg, settings.timeout_s)
    packages = federated_audit(grid, store, packages, cfg, settings.timeout_s)
    if len(packages) < cfg.federation.min_sites:
        raise NotEnoughSites(
            f"{len(packages)} generator(s) passed the audit, "
            f"the run needs {cfg.federation.min_sites}"
        )
    condensed = {
        pkg.manifest.site_id: sample_site(
            store, pkg, cfg.federation.ipc, cfg.sampling.seed
        )
        for pkg in packages.values()
    }
    store.finish_stage("sample", {"images": sum(len(c) for c in condensed.values())})
    # the IPC sets are sampled (grids, dashboard) in both downstream modes
    model = train_shared_vit(
        store, ImageSet.concat(list(condensed.values())), cfg, packages.values()
    )
    store.finish_stage("train")
    if store.stage_done("central_eval") is None:
        central = evaluate_central(model, settings.test_set, list(cfg.data.classes))
        if central is not None:
            metrics, per_class = central
            store.put_metrics("central", metrics.as_record())
            store.write_json(CENTRAL_REPORT, per_class)
        store.finish_stage("central_eval")
    site_contributions(store, model, condensed, settings.test_set, cfg)
    federated_evaluate(grid, strategy, store, model, cfg, settings.timeout_s)
    collect_late_replies(grid, strategy, store)
    store.set_status("finished")
    summary = {
        "run_id": store.run_id,
        "run_dir": str(store.dir),
        "metrics": store.metrics(),
        "sites": [r.__dict__ for r in store.sites()],
    }
    summary["dashboard"] = str(render_dashboard(store))
    (store.dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
