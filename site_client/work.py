"""What a hospital's node does, without Flower: the work itself.

Condense (in-process or under torchrun on its GPUs) unless :mod:`.plan` finds a
package it can reuse, bind it to the coordinator's request, audit it before
release, score the coordinator's attacks on its own members, and evaluate a
received shared ViT on its local test split.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from medsynth_fl.config import ClassifierTrainConfig, Config
from medsynth_fl.data import load_train_test
from medsynth_fl.data.imageset import ImageSet
from medsynth_fl.evaluation import ClassificationMetrics, evaluate_classifier
from medsynth_fl.models.classifiers import build_classifier
from medsynth_fl.models.registry import load_critic
from medsynth_fl.package import (
    GeneratorPackage,
    Release,
    bind_release,
    load_private_key,
    read_package,
)
from medsynth_fl.privacy import (
    AttackModels,
    audit_metrics,
    audit_options,
    build_package_attacks,
    release_gate,
    run_audit,
    write_report_json,
)
from medsynth_fl.training.classifier import ClassifierTrainer
from medsynth_fl.training.condense import PACKAGE_NAME, Condenser
from medsynth_fl.training.distributed import DistInfo
from medsynth_fl.training.loop import LoopContext
from medsynth_fl.wire import Key, Metric

from .plan import SiteSetup, cached_package, run_folder

log = logging.getLogger(__name__)


def condense_site(site: SiteSetup, cfg: Config) -> tuple[GeneratorPackage, ImageSet]:
    """Return this site's package, condensing only when no valid one exists.

    An interrupted earlier condensation is resumed from its checkpoint. With
    more than one GPU the work runs under ``torchrun``; otherwise in-process.
    """
    train, _ = load_train_test(cfg.data)
    work = run_folder(site, cfg)
    pkg = cached_package(work, cfg)
    if pkg is not None:
        log.info("site %s: reusing its package %s", site.site_id, work / PACKAGE_NAME)
        return pkg, train
    if site.num_gpus > 1:
        run_torchrun(site, cfg, work)
    else:
        Condenser(cfg, train, work, load_private_key(site.key_path)).run(resume=True)
    return read_package(work / PACKAGE_NAME, max_bytes=cfg.package.max_bytes), train


def bind_to_request(
    site: SiteSetup, pkg: GeneratorPackage, config: Mapping[str, object]
) -> GeneratorPackage:
    """``pkg`` bound to the coordinator's request ``config`` (run, round, nonce).

    The coordinator refuses an unbound package; a request without a nonce (an
    older coordinator) gets the package as it is.
    """
    if Key.NONCE not in config:
        return pkg
    try:
        release = Release(
            run_id=str(config[Key.RUN_ID]),
            round=int(config[Key.SERVER_ROUND]),
            nonce=str(config[Key.NONCE]),
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"the coordinator's request is malformed: {exc}") from None
    return bind_release(pkg, release, load_private_key(site.key_path))


def run_torchrun(site: SiteSetup, cfg: Config, work: Path) -> None:
    """Condense with ``torchrun`` over the node's GPUs (same entry point as the CLI)."""
    work.mkdir(parents=True, exist_ok=True)
    config_path = work / "resolved_config.yaml"
    config_path.write_text(cfg.to_yaml())
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={site.num_gpus}",
        "-m",
        "medsynth_fl.cli",
        "condense",
        "--config",
        str(config_path),
        "--out",
        str(work),
        "--key",
        str(site.key_path),
        "--resume",
        "--device",
        "cuda",
    ]
    log.info("site %s: %s", site.site_id, " ".join(cmd))
    subprocess.run(cmd, check=True, env=dict(os.environ))


@dataclass(frozen=True)
class ReleaseDecision:
    """The site's self-audit of its generator before release, and the gate's verdict."""

    allowed: bool
    reasons: list[str]
    metrics: dict[str, float]


def self_audit(
    site: SiteSetup, cfg: Config, pkg: GeneratorPackage, train: ImageSet
) -> ReleaseDecision:
    """Audit the generator with the site's own critic and images; apply the gate.

    White-box LOGAN (the critic never leaves the site), the distance attacks
    and the memorisation check run here on the site's training images
    (members) against its held-out images (non-members). The full report stays
    in the site's work folder; only aggregate metrics may leave.
    """
    work = run_folder(site, cfg)
    # the gate's thresholds are in the audit section, outside the site digest
    cached = work / f"release_decision-{cfg.section_digest('audit')}.json"
    if cached.is_file():  # the same package was audited under the same gate
        return ReleaseDecision(**json.loads(cached.read_text()))
    _, test = load_train_test(cfg.data)
    models = build_package_attacks(
        pkg, cfg.audit, cfg.training.seed, train_models=False
    )
    critic = load_critic(work / "site_local" / "critic.safetensors")
    report = run_audit(
        train,
        test,
        models,
        critic=critic,
        **audit_options(cfg.audit),
        seed=cfg.training.seed,
    )
    gate = release_gate(report, cfg.audit.max_auc, cfg.audit.max_tpr_at_1pct_fpr)
    write_report_json(report, work / "release_audit.json", gate)
    metrics = {
        **audit_metrics(report),
        Metric.GATE_ALLOWED: float(gate.allowed),
        Metric.MEMORIZATION_RATE: float(report.memorization.get("pixel", 0.0)),
    }
    if not gate.allowed:
        log.warning(
            "site %s: release refused by its gate: %s",
            site.site_id,
            "; ".join(gate.reasons),
        )
    decision = ReleaseDecision(gate.allowed, list(gate.reasons), metrics)
    cached.write_text(json.dumps(dataclasses.asdict(decision)))
    return decision


def audit_for_coordinator(
    site: SiteSetup, cfg: Config, arrays: dict, meta: dict
) -> dict[str, float]:
    """Score this site's members and non-members with the coordinator's attacks.

    The attack models are built from the generator alone; return aggregate
    metrics only.
    """
    train, test = load_train_test(cfg.data)
    work = run_folder(site, cfg)
    pkg = read_package(work / PACKAGE_NAME, max_bytes=cfg.package.max_bytes)
    models = AttackModels.from_state(arrays, meta, pkg.build_generator())
    report = run_audit(
        train,
        test,
        models,
        **audit_options(cfg.audit),
        seed=cfg.training.seed,
    )
    write_report_json(report, work / "federated_audit.json")
    return audit_metrics(report)


def evaluate_shared_vit(
    clf_cfg: ClassifierTrainConfig,
    state: dict[str, torch.Tensor],
    num_classes: int,
    cfg: Config,
    image_size: int | None = None,
) -> ClassificationMetrics:
    """Evaluate the coordinator's shared model on this site's local test split.

    ``clf_cfg`` and ``image_size`` (default: this site's) rebuild the model the
    coordinator trained before its weights are loaded.
    """
    model = build_classifier(clf_cfg, num_classes, image_size or cfg.data.image_size)
    model.load_state_dict(state, strict=True)
    _, test = load_train_test(cfg.data)
    return evaluate_classifier(model, test)


def train_local_vit(
    cfg: Config, state: dict[str, torch.Tensor] | None, steps: int, seed: int
) -> tuple[dict[str, torch.Tensor], int]:
    """Train the classifier ViT on this site's images for ``steps`` steps.

    From ``state`` (a FedAvg round) or from scratch (local-only baseline).
    Returns the new weights and the number of training images.
    """
    train, _ = load_train_test(cfg.data)
    torch.manual_seed(seed)
    train_cfg = cfg.classifier.model_copy(update={"steps": steps, "epochs": None})
    trainer = ClassifierTrainer(
        train_cfg, len(train.class_names), DistInfo(), len(train), train.image_size
    )
    if state is not None:
        trainer.model.load_state_dict(state, strict=True)
    model = trainer.fit(train, LoopContext(seed=seed), stage="local")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, len(train)


def local_only_metrics(cfg: Config, seed: int) -> dict[str, float]:
    """Local-only baseline: train on this site's images, test on its own test split."""
    state, _ = train_local_vit(cfg, None, cfg.classifier.steps, seed)
    return evaluate_shared_vit(
        cfg.classifier, state, len(cfg.data.classes), cfg
    ).as_record()
