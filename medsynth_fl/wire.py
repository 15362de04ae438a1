"""Every name that travels between a site and the coordinator, defined once.

A Flower message holds a ``RecordDict`` of named records (:class:`Record`);
config records hold keys (:class:`Key`); metric records hold metric names
(:class:`Metric`, and the audit's ``audit/<attack>/<metric>`` names built by
:mod:`medsynth_fl.privacy.report`). The site's egress guard
(:mod:`site_client.egress`) builds every reply from these names, and the
coordinator (:mod:`coordinator.strategy`, :mod:`coordinator.rounds`,
:mod:`coordinator.replies`) reads them back by the same names, so renaming
a key is one edit here.

Flower-free: plain strings, usable wherever records are built or read.
"""

from __future__ import annotations

from typing import Final


class Record:
    """Names of the records inside a message's ``RecordDict``."""

    CONFIG: Final = "config"  # a request's settings (ConfigRecord)
    ARRAYS: Final = "arrays"  # model weights sent or returned (FedAvg, evaluation)
    METRICS: Final = "metrics"  # aggregate metrics a site returns (MetricRecord)
    GENERATOR: Final = "generator"  # a package's tensors (ArrayRecord)
    PACKAGE: Final = "package"  # a package's manifest and signature (ConfigRecord)
    REFUSAL: Final = "refusal"  # why a site's gate withheld its generator
    ATTACK: Final = "attack"  # the coordinator's attack models (ArrayRecord)
    ATTACK_META: Final = "attack-meta"  # their settings (ConfigRecord)


class Key:
    """Keys of the config records."""

    # a package reply, or a refusal
    MANIFEST: Final = "manifest"
    SIGNATURE: Final = "signature"
    SITE_ID: Final = "site-id"
    REASONS: Final = "reasons"
    # a request for a generator: the binding the package must carry
    RUN_ID: Final = "run-id"
    SERVER_ROUND: Final = "server-round"
    NONCE: Final = "nonce"
    # baseline and evaluation requests
    LOCAL_STEPS: Final = "local-steps"
    SEED: Final = "seed"
    CLASSIFIER: Final = "classifier"
    NUM_CLASSES: Final = "num-classes"
    IMAGE_SIZE: Final = "image-size"


class Metric:
    """Metric names a site may return besides the audit's."""

    NUM_EXAMPLES: Final = "num-examples"
    SECONDS: Final = "seconds"
    AUC: Final = "auc"
    ACC: Final = "acc"
    BAL_ACC: Final = "bal-acc"
    GATE_ALLOWED: Final = "gate-allowed"
    MEMORIZATION_RATE: Final = "memorization-rate"
    REJECTION_RATE: Final = "rejection-rate"


PACKAGE_CONFIG_KEYS: Final = frozenset({Key.MANIFEST, Key.SIGNATURE, Key.SITE_ID})
REFUSAL_CONFIG_KEYS: Final = frozenset({Key.SITE_ID, Key.REASONS})
METRIC_KEYS: Final = frozenset(
    v for k, v in vars(Metric).items() if not k.startswith("_")
)
