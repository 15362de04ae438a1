"""Release gate, federated audit, quarantine, and the baselines.

All over an in-process grid.
"""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp.strategy import FedAvg
from flwr.supercore.task_identity import TaskIdentity

from coordinator import rounds
from coordinator.baselines import OrderedFedAvg
from coordinator.server_app import run_coordinator
from coordinator.store import RunStore
from site_client import client_app as client_module
from site_client.client_app import create_client_app

from .fakes import InProcessGrid


def make_grid(run_config, n_sites=4):
    nodes = {100 + i: {"partition-id": i} for i in range(n_sites)}
    return InProcessGrid(create_client_app(run_config), nodes, run_config)


def test_every_accepted_generator_is_audited_at_its_site(run_config):
    summary = run_coordinator(make_grid(run_config), run_config, flower_run_id=1)
    audits = {k: v for k, v in summary["metrics"].items() if k.startswith("audit:")}
    assert len(audits) == 4
    for metrics in audits.values():
        # generator-only attacks, scored by the site on its own members/non-members
        assert {
            "audit/logan_bb/auc",
            "audit/recovery_pixel/auc",
            "audit/nn_embed/auc",
        } <= set(metrics)
        assert (
            "audit/logan_wb/auc" not in metrics
        )  # white-box needs the critic: site-only
    sites = {s["site_id"]: s for s in summary["sites"]}
    assert all(s["status"] == "accepted" for s in sites.values())


def test_site_release_gate_withholds_a_generator_and_says_why(run_config, tmp_path):
    strict = dict(
        run_config,
        **{
            "overrides": run_config["overrides"] + "; audit.max-auc=0.5001",
            "store-dir": str(tmp_path / "strict"),
        },
    )
    with pytest.raises(rounds.NotEnoughSites):
        run_coordinator(make_grid(strict), strict, flower_run_id=1)
    refused = RunStore(tmp_path / "strict", "test-run").sites("rejected")
    assert refused
    assert all(
        "withheld by the site's release gate" in r.reason and "AUC" in r.reason
        for r in refused
    )
    # stored under the site id the refusal names, not only the node id
    assert {r.site_id for r in refused} <= {
        "HAM_rosendahl",
        "HAM_vidir_modern",
        "HAM_vidir_molemax",
        "HAM_vienna_dias",
    }
    assert all(r.site_id for r in refused)


def test_a_leaking_generator_is_quarantined_and_the_round_goes_on(
    run_config, monkeypatch
):
    real = client_module.audit_for_coordinator

    def leaky_at_one_site(site, cfg, arrays, meta):
        metrics = real(site, cfg, arrays, meta)
        if site.site_id == "HAM_rosendahl":
            metrics["audit/logan_bb/auc"] = 0.97
        return metrics

    monkeypatch.setattr(client_module, "audit_for_coordinator", leaky_at_one_site)
    summary = run_coordinator(make_grid(run_config), run_config, flower_run_id=1)
    status = {s["site_id"]: (s["status"], s["reason"]) for s in summary["sites"]}
    assert (
        status["HAM_rosendahl"][0] == "quarantined"
        and "logan_bb" in status["HAM_rosendahl"][1]
    )
    store = RunStore(run_config["store-dir"], "test-run")
    condensed = sorted(p.stem for p in (store.dir / "condensed").glob("*.npz"))
    assert "HAM_rosendahl" not in condensed and len(condensed) == 3


def test_fedavg_baseline_needs_the_sites_opt_in(
    run_config, tiny_federation, monkeypatch
):
    trained_at = []  # the sites that spent compute on a FedAvg round
    real_train = client_module.train_local_vit

    def recording_train(cfg, *args):
        trained_at.append(cfg.package.site_id)
        return real_train(cfg, *args)

    monkeypatch.setattr(client_module, "train_local_vit", recording_train)
    fed = dict(
        run_config,
        mode="fedavg",
        overrides=run_config["overrides"]
        + "; federation.baseline-rounds=2; federation.baseline-local-steps=2",
    )
    sites = tiny_federation.sites_dir
    try:
        for folder in sites.iterdir():
            (folder / "node.json").write_text(json.dumps({"allow-baselines": True}))
        first = make_grid(fed)
        summary = run_coordinator(first, fed, flower_run_id=1)
        assert 0 <= summary["metrics"]["central"]["auc"] <= 1
        # Flower's named action: the sites' train.fedavg handler, never condensation
        assert first.sent_of_type("train.fedavg") and not first.sent_of_type("train")
        (sites / "HAM_rosendahl" / "node.json").unlink()
        assert "HAM_rosendahl" in trained_at
        trained_at.clear()
        grid = make_grid(fed)
        run_coordinator(grid, dict(fed, **{"run-id": "second"}), flower_run_id=1)
        refused = [r for r in grid.replies if r.has_error()]
        assert refused and all("allow-baselines" in r.error.reason for r in refused)
        # refused before training, not after
        assert trained_at and "HAM_rosendahl" not in trained_at
    finally:
        for folder in sites.iterdir():
            (folder / "node.json").unlink(missing_ok=True)


def test_local_only_baseline_returns_metrics_only(run_config):
    local = dict(
        run_config,
        mode="local-only",
        overrides=run_config["overrides"] + "; classifier.steps=2",
    )
    grid = make_grid(local)
    summary = run_coordinator(grid, local, flower_run_id=1)
    assert len(summary["metrics"]) == 4
    assert len(grid.sent_of_type("query.local_only")) == len(grid.sent) == 4
    for reply in grid.replies:
        assert list(reply.content) == ["metrics"]


def _train_reply(node: int, values: list[float], n: int) -> Message:
    request = Message(RecordDict(), dst_node_id=node, message_type=MessageType.TRAIN)
    content = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(np.asarray(values, dtype=np.float32))}),
            "metrics": MetricRecord({"num-examples": n}),
        }
    )
    return Message(content, reply_to=request)


def test_fedavg_aggregate_does_not_depend_on_reply_order(monkeypatch):
    for field in ("_task_id", "_run_id", "_node_id"):  # Flower's messages need them
        monkeypatch.setattr(TaskIdentity, field, 1)
    # float32 sums that round differently in different orders
    replies = [
        _train_reply(1, [1e8, 0.1, 3.3], 7),
        _train_reply(2, [1.0, 1e-3, -7.1], 5),
        _train_reply(3, [-1e8, 2.7, 1e6], 3),
        _train_reply(4, [0.5, -0.9, 1e-4], 11),
    ]
    plain = {
        FedAvg().aggregate_train(1, order)[0]["w"].numpy().tobytes()
        for order in itertools.permutations(replies)
    }
    assert len(plain) > 1  # Flower's sum follows the order replies arrive in
    ordered = {
        OrderedFedAvg().aggregate_train(1, order)[0]["w"].numpy().tobytes()
        for order in itertools.permutations(replies)
    }
    assert len(ordered) == 1


class HostileGrid(InProcessGrid):
    """Sites that answer badly, each in one stage (node → stage → damage)."""

    def __init__(self, *args, damage, **kwargs):
        super().__init__(*args, **kwargs)
        self.damage = damage

    def send_and_receive(self, messages, *, timeout=None):
        replies = super().send_and_receive(messages, timeout=timeout)
        for reply in replies:
            node = reply.metadata.src_node_id
            stage = reply.metadata.message_type.split(".")[-1]  # train/audit/evaluate
            if not reply.has_error() and (node, stage) in self.damage:
                self.damage[(node, stage)](reply.content)
        return replies


def _nan_metric(content):
    content["metrics"] = MetricRecord({**dict(content["metrics"]), "seconds": math.nan})


def _no_metrics(content):
    del content["metrics"]


def _infinite_accuracy(content):
    content["metrics"] = MetricRecord({**dict(content["metrics"]), "bal-acc": math.inf})


def test_hostile_replies_are_refused_by_name_and_the_round_goes_on(run_config):
    nodes = {100 + i: {"partition-id": i} for i in range(4)}
    grid = HostileGrid(
        create_client_app(run_config),
        nodes,
        run_config,
        damage={
            (100, "train"): _nan_metric,  # its package comes with a NaN metric
            (101, "audit"): _no_metrics,  # its audit reply is malformed
            (102, "evaluate"): _infinite_accuracy,
        },
    )
    summary = run_coordinator(grid, run_config, flower_run_id=1)
    store = RunStore(run_config["store-dir"], "test-run")
    by_node = {r.node_id: r for r in store.sites()}
    assert by_node[100].status == "rejected"
    assert "non-finite-metric" in by_node[100].reason
    assert by_node[101].status == "quarantined"
    assert "malformed-reply" in by_node[101].reason
    assert by_node[102].status == by_node[103].status == "accepted"
    # the evaluation reply with an infinite metric is left out of the average
    evaluated = {k for k in summary["metrics"] if k.startswith("site:")}
    assert evaluated == {f"site:{by_node[103].site_id}"}
    assert any("non-finite-metric" in m for _, _, m in store.events())
    assert store.status() == "finished"
    # nothing already stored was lost: both contributing packages are on disk
    for node in (102, 103):
        assert Path(by_node[node].package_path).is_file()
