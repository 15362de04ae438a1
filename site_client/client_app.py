"""The Flower ClientApp a hospital runs: condense on request, ship only the package.

Each handler reads its config, calls the Flower-free core (:mod:`.work`), and
packs the reply through the egress guard (:mod:`.egress`).
"""

from __future__ import annotations

import time

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from medsynth_fl.config import ClassifierTrainConfig, from_flower
from medsynth_fl.wire import Key, Metric, Record

from .egress import (
    baseline_model_reply,
    metrics_reply,
    package_reply,
    refusal_reply,
    require_baseline_opt_in,
)
from .plan import site_from_node_config
from .work import (
    audit_for_coordinator,
    bind_to_request,
    condense_site,
    evaluate_shared_vit,
    local_only_metrics,
    self_audit,
    train_local_vit,
)


def _plain(value):
    """ConfigRecord lists come back as lists; everything else as is."""
    return list(value) if isinstance(value, (list, tuple)) else value


def _site_and_config(context: Context, defaults: dict):
    run_config = {**defaults, **dict(context.run_config)}
    site = site_from_node_config(dict(context.node_config), run_config)
    return site, from_flower(run_config, site.config_overrides())


def create_client_app(run_config_defaults: dict | None = None) -> ClientApp:
    """Build the ClientApp.

    ``run_config_defaults`` stand in for an empty run config (in-process
    ``run_simulation`` has none).
    """
    defaults = dict(run_config_defaults or {})
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        """Condense this site's images (or reuse its package); reply with the package.

        The package is bound to this request (run, round, nonce) before it leaves.
        """
        t0 = time.monotonic()
        site, cfg = _site_and_config(context, defaults)
        pkg, train_set = condense_site(site, cfg)
        decision = self_audit(site, cfg, pkg, train_set)
        metrics = {
            **decision.metrics,
            Metric.NUM_EXAMPLES: len(train_set),
            Metric.SECONDS: time.monotonic() - t0,
        }
        if not decision.allowed:
            return refusal_reply(msg, site.site_id, decision.reasons, metrics)
        return package_reply(
            msg, bind_to_request(site, pkg, msg.content[Record.CONFIG]), metrics
        )

    @app.train("fedavg")
    def fedavg(msg: Message, context: Context) -> Message:
        """The FedAvg baseline: local steps on the sent ViT, with the site's opt-in."""
        site, cfg = _site_and_config(context, defaults)
        config = msg.content[Record.CONFIG]
        require_baseline_opt_in(site.allow_baselines)
        sent = msg.content[Record.ARRAYS]
        seed = int(config.get(Key.SEED, cfg.training.seed))
        state, n = train_local_vit(
            cfg,
            sent.to_torch_state_dict(),
            int(config[Key.LOCAL_STEPS]),
            seed + int(config.get(Key.SERVER_ROUND, 0)),
        )
        return baseline_model_reply(
            msg, sent, state, {Metric.NUM_EXAMPLES: n}, site.allow_baselines
        )

    @app.query("local_only")
    def local_only(msg: Message, context: Context) -> Message:
        """The local-only baseline: train and test at the site; metrics only."""
        _, cfg = _site_and_config(context, defaults)
        seed = int(msg.content[Record.CONFIG].get(Key.SEED, cfg.training.seed))
        return metrics_reply(msg, local_only_metrics(cfg, seed))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        """Evaluate the received shared ViT on this site's test split.

        Reply with metrics.
        """
        _, cfg = _site_and_config(context, defaults)
        config = msg.content[Record.CONFIG]
        clf_cfg = ClassifierTrainConfig.model_validate_json(str(config[Key.CLASSIFIER]))
        state = msg.content[Record.ARRAYS].to_torch_state_dict()
        size = int(config.get(Key.IMAGE_SIZE, cfg.data.image_size))
        m = evaluate_shared_vit(clf_cfg, state, int(config[Key.NUM_CLASSES]), cfg, size)
        return metrics_reply(msg, m.as_record())

    @app.query("audit")
    def audit(msg: Message, context: Context) -> Message:
        """Score local members vs non-members with the coordinator's attack models."""
        site, cfg = _site_and_config(context, defaults)
        arrays = {k: v.numpy() for k, v in msg.content[Record.ATTACK].items()}
        meta = {k: _plain(v) for k, v in msg.content[Record.ATTACK_META].items()}
        return metrics_reply(msg, audit_for_coordinator(site, cfg, arrays, meta))

    return app


app = create_client_app()
