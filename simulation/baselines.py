"""Baselines that need the sites' data in one place.

Only a simulation can run them: pooled training (the upper bound) and local-only
models scored on the pooled test set (FLamby's protocol).
"""

from __future__ import annotations

from medsynth_fl.config import Config
from medsynth_fl.data.imageset import ImageSet
from medsynth_fl.evaluation import ClassificationMetrics, evaluate_classifier
from medsynth_fl.training.classifier import train_classifier


def train_and_score(
    train: ImageSet, test: ImageSet, cfg: Config, seed: int
) -> ClassificationMetrics:
    """Train the classifier ViT on ``train`` with ``cfg.classifier``.

    Score it on ``test``.
    """
    return evaluate_classifier(train_classifier(train, cfg.classifier, seed=seed), test)


def pooled(
    site_trains: dict[str, ImageSet], test: ImageSet, cfg: Config, seed: int
) -> ClassificationMetrics:
    """The upper bound: one ViT on the union of every site's training images."""
    return train_and_score(ImageSet.concat(list(site_trains.values())), test, cfg, seed)


def local_only(
    site_trains: dict[str, ImageSet], test: ImageSet, cfg: Config, seed: int
) -> dict[str, ClassificationMetrics]:
    """One ViT per site on its own images, each scored on the pooled test set."""
    return {
        site: train_and_score(train, test, cfg, seed)
        for site, train in site_trains.items()
    }
