"""Baselines on the same sites, with the same ViT.

FedAvg (Flower's own strategy, aggregating in an order fixed by the replies'
content) and local-only training. Pooled training needs the data in one place
and is in :mod:`simulation.baselines`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from medsynth_fl.config import Config
from medsynth_fl.data import load_npz
from medsynth_fl.evaluation import evaluate_classifier
from medsynth_fl.models.classifiers import build_classifier
from medsynth_fl.wire import Key, Record

from .store import RunStore

log = logging.getLogger(__name__)

# The ClientApp's named actions the baselines address (Flower's "<category>.<action>")
FEDAVG_ACTION = f"{MessageType.TRAIN}.fedavg"
LOCAL_ONLY_ACTION = f"{MessageType.QUERY}.local_only"


def _reply_digest(msg: Message) -> str:
    """sha256 of a train reply's arrays and metrics: its key in the canonical order."""
    h = hashlib.sha256()
    for record in msg.content.array_records.values():
        for name in sorted(record):
            array: Array = record[name]
            h.update(name.encode())
            h.update(array.data)
    for record in msg.content.metric_records.values():
        h.update(repr(sorted(record.items())).encode())
    return h.hexdigest()


class OrderedFedAvg(FedAvg):
    """Flower's FedAvg, aggregating replies in an order that does not depend on timing.

    Flower sums the weighted float32 arrays in the order replies arrive, and
    float addition is not associative: the same seeds gave FedAvg balanced
    accuracies up to 0.04 apart across runs, as rounding differences grew over
    10 rounds of training. Sorting replies by the hash of their arrays makes
    the average a function of the replies alone. Error replies go last, where
    Flower's own checks log and drop them.
    """

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Flower's aggregation, over the replies sorted by :func:`_reply_digest`."""
        replies = list(replies)
        ok = sorted((m for m in replies if not m.has_error()), key=_reply_digest)
        failed = [m for m in replies if m.has_error()]
        return super().aggregate_train(server_round, ok + failed)

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Flower's train messages, addressed to the sites' ``train.fedavg`` action."""
        return [
            Message(
                m.content,
                dst_node_id=m.metadata.dst_node_id,
                message_type=FEDAVG_ACTION,
                group_id=m.metadata.group_id,
            )
            for m in super().configure_train(server_round, arrays, config, grid)
        ]


def run_fedavg(
    grid: Grid, cfg: Config, store: RunStore, test_set: Path | None, seed: int
) -> dict[str, float]:
    """FedAvg of the classifier ViT over the sites; central metrics of the final model.

    Round budget: ``federation.baseline_rounds`` rounds of
    ``federation.baseline_local_steps`` local steps at every site. Sites must
    have opted in (``allow-baselines``): FedAvg ships a classifier off-site.
    """
    classes = list(cfg.data.classes)
    torch.manual_seed(seed)
    model = build_classifier(cfg.classifier, len(classes), cfg.data.image_size)
    test = load_npz(test_set, classes=classes, empty_class="skip") if test_set else None

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if test is None or server_round < cfg.federation.baseline_rounds:
            # only the final model is scored (the test set is not for selection)
            return None
        model.load_state_dict(arrays.to_torch_state_dict())
        return MetricRecord(evaluate_classifier(model, test).as_record())

    strategy = OrderedFedAvg(
        fraction_evaluate=0.0,
        min_train_nodes=cfg.federation.min_sites,
        min_available_nodes=cfg.federation.min_sites,
    )
    train_config = ConfigRecord(
        {
            Key.LOCAL_STEPS: cfg.federation.baseline_local_steps,
            Key.SEED: seed,
        }
    )
    result = strategy.start(
        grid,
        ArrayRecord(model.state_dict()),
        num_rounds=cfg.federation.baseline_rounds,
        timeout=cfg.federation.timeout_s,
        train_config=train_config,
        evaluate_fn=central,
    )
    final = dict(
        result.evaluate_metrics_serverapp.get(cfg.federation.baseline_rounds, {})
    )
    store.put_metrics(f"fedavg:seed{seed}", final)
    return {k: float(v) for k, v in final.items()}


def run_local_only(
    grid: Grid, cfg: Config, store: RunStore, seed: int
) -> dict[str, dict[str, float]]:
    """Every site trains the ViT on its own images and tests it on its own split."""
    nodes = list(grid.get_node_ids())
    config = ConfigRecord({Key.SEED: seed})
    messages = [
        Message(
            RecordDict({Record.CONFIG: config}),
            dst_node_id=n,
            message_type=LOCAL_ONLY_ACTION,
        )
        for n in nodes
    ]
    out = {}
    for reply in grid.send_and_receive(messages, timeout=cfg.federation.timeout_s):
        node = reply.metadata.src_node_id
        if reply.has_error():
            store.log(
                "warning",
                f"node {node}: local-only baseline failed: {reply.error.reason}",
            )
            continue
        out[str(node)] = {k: float(v) for k, v in reply.content[Record.METRICS].items()}
        store.put_metrics(f"local-only:node{node}:seed{seed}", out[str(node)])
    return out
