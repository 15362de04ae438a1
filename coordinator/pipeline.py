"""The coordinator's work after packages arrive, without Flower.

Sample condensed sets, train the shared model on their union or on a stream of
fresh generator samples (``federation.downstream``; resumably), evaluate it
centrally, and value each site's contribution.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medsynth_fl.config import Config
from medsynth_fl.data import load_npz
from medsynth_fl.data.imageset import ImageSet
from medsynth_fl.evaluation import (
    ClassificationMetrics,
    classification_metrics,
    per_class_report,
    predict_proba,
)
from medsynth_fl.models.classifiers import build_classifier, classifier_embedding
from medsynth_fl.package import GeneratorPackage
from medsynth_fl.sampling import sample_condensed_set, save_class_grids
from medsynth_fl.training.batches import BatchSource, ImageSetSource
from medsynth_fl.training.checkpoint import load_checkpoint, save_checkpoint
from medsynth_fl.training.classifier import ClassifierTrainer
from medsynth_fl.training.distributed import DistInfo
from medsynth_fl.training.loop import LoopContext
from medsynth_fl.training.reporting import Reporter
from medsynth_fl.training.seeding import derive_seed
from medsynth_fl.training.stream import GeneratorStream

from .contributions import (
    CoalitionPredictions,
    compute_contributions,
    linear_probe_trainer,
)
from .sample_quality import sample_quality
from .store import CONTRIBUTIONS, RunStore

log = logging.getLogger(__name__)


def sample_site(
    store: RunStore, pkg: GeneratorPackage, ipc: int, seed: int
) -> ImageSet:
    """Sample ``ipc`` images per present class from one site's generator (cached)."""
    site = pkg.manifest.site_id
    path = store.dir / "condensed" / f"{site}.npz"
    if path.is_file():
        return load_npz(
            path, classes=list(pkg.manifest.class_names), empty_class="skip"
        )
    images = sample_condensed_set(
        pkg.build_generator(),
        list(pkg.manifest.class_names),
        list(pkg.manifest.classes_present),
        ipc,
        seed=derive_seed(seed, site) % 2**31,
    )
    images.save_npz(path)
    save_class_grids(images, store.dir / "condensed" / f"{site}_grids")
    return images


def site_holdings(
    packages: Iterable[GeneratorPackage], class_names: tuple[str, ...], weighting: str
) -> list[dict[int, float]]:
    """Each package's weight in every class it holds (``federation.site_weighting``).

    ``"images"``: its training images of the class (the manifest's
    ``class_counts``), so a class's stream mixes sites as pooled real data
    would; ``"uniform"``: 1 for every holder. Packages made before manifests
    carried counts make the whole round uniform, with a warning.
    """
    packages = list(packages)
    for pkg in packages:
        names = tuple(pkg.manifest.class_names)
        if names != tuple(class_names):
            raise ValueError(
                f"site {pkg.manifest.site_id}: label space {list(names)} differs "
                f"from the shared one {list(class_names)}"
            )
    if weighting == "images":
        missing = [
            p.manifest.site_id
            for p in packages
            if p.manifest.training.class_counts is None
        ]
        if missing:
            log.warning(
                "no class counts in the packages of %s: sites weighed uniformly",
                ", ".join(missing),
            )
            weighting = "uniform"
    holdings = []
    for pkg in packages:
        m = pkg.manifest
        counts = m.training.class_counts if weighting == "images" else None
        holdings.append(
            {
                class_names.index(c): float(counts[c] if counts else 1.0)
                for c in m.classes_present
            }
        )
    return holdings


def generator_stream(
    packages: Iterable[GeneratorPackage],
    class_names: tuple[str, ...],
    weighting: str = "images",
) -> GeneratorStream:
    """A stream of fresh samples from the packages' generators.

    Each generator draws only its manifest's ``classes_present``; labels are
    indices into ``class_names``, which must be every manifest's label space.
    Within a class, sites are drawn by ``site_holdings(..., weighting)``.
    """
    packages = list(packages)
    holdings = site_holdings(packages, class_names, weighting)
    entries = [
        (pkg.build_generator(), held)
        for pkg, held in zip(packages, holdings, strict=True)
    ]
    return GeneratorStream(entries, len(class_names))


def shared_model_source(
    cfg: Config, union: ImageSet, packages: Iterable[GeneratorPackage]
) -> BatchSource:
    """What the shared model trains on, under ``federation.downstream``.

    ``"stream"``: fresh samples of the ``packages``' generators at every step,
    sites mixed within a class by ``federation.site_weighting``;
    ``"fixed"``: the condensed ``union``, sampled once.
    """
    if cfg.federation.downstream == "stream":
        return generator_stream(
            packages, union.class_names, cfg.federation.site_weighting
        )
    return ImageSetSource(union, cfg.classifier.class_sampling)


def train_shared_vit(
    store: RunStore,
    union: ImageSet,
    cfg: Config,
    packages: Iterable[GeneratorPackage] = (),
) -> nn.Module:
    """Train the shared model; resume from its checkpoint.

    With ``federation.downstream = "fixed"`` it trains on the condensed
    ``union``; with ``"stream"`` on fresh samples of the ``packages``'
    generators at every step (for as many steps as the union would give).
    The finished weights are kept in ``models/shared_vit.safetensors`` and
    reloaded (not retrained) when the stage is already done.
    """
    final = store.dir / "models" / "shared_vit.safetensors"
    num_classes = len(union.class_names)
    if final.is_file():
        model = build_classifier(cfg.classifier, num_classes, union.image_size)
        model.load_state_dict(load_file(final))
        return model.eval()
    source = shared_model_source(cfg, union, packages)
    ckpt = store.dir / "models" / "shared_vit_checkpoint.pt"
    seed = cfg.training.seed
    torch.manual_seed(seed)  # same initialisation on a restart
    trainer = ClassifierTrainer(
        cfg.classifier, num_classes, DistInfo(), len(union), union.image_size
    )
    start = 0
    if ckpt.is_file():
        state = load_checkpoint(ckpt)
        trainer.load_state_dict(state["trainer"])
        start = int(state["step"])
        log.info("resuming the shared ViT at step %d", start)

    def save(stage: str, step: int) -> None:
        save_checkpoint(ckpt, {"trainer": trainer.state_dict(), "step": step})

    reporter = Reporter(
        store.dir / "logs" / "shared_vit_metrics.jsonl", cfg.training.log_every
    )
    ctx = LoopContext(
        DistInfo(),
        seed,
        reporter,
        checkpoint_every=cfg.training.checkpoint_every,
        save=save,
    )
    model = trainer.fit_source(source, ctx, stage="shared_vit", start=start)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, final)
    return model


def evaluate_central(
    model: nn.Module, test_path: Path | None, class_names: list[str]
) -> tuple[ClassificationMetrics, dict] | None:
    """Evaluate on the coordinator's own held-out real test set, when it has one.

    Returns the summary metrics and the per-class report with the confusion
    matrix (:func:`~medsynth_fl.evaluation.per_class_report`).
    """
    if test_path is None:
        return None
    # A held-out set may lack a rare class; AUC and balanced accuracy skip it.
    test = load_npz(test_path, classes=class_names, empty_class="skip")
    if len(test) == 0:
        raise ValueError(f"the coordinator's test set {test_path} is empty")
    proba = predict_proba(model, test)
    return (
        classification_metrics(test.labels, proba),
        per_class_report(test.labels, proba, test.class_names),
    )


@torch.no_grad()
def embed_images(
    model: nn.Module, images: ImageSet, batch_size: int = 256
) -> np.ndarray:
    """Penultimate features of ``model`` for every image (the probe's space)."""
    model.eval()
    x, _ = images.to_tensors()
    return torch.cat(
        [classifier_embedding(model, b).float() for b in x.split(batch_size)]
    ).numpy()


def site_features(
    model: nn.Module, condensed: dict[str, ImageSet], test: ImageSet
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``model``'s frozen features of each site's condensed set and of ``test``.

    The one feature space in which the contributions' probe is fitted and every
    site's sample quality is measured, so sites are compared on equal terms.
    """
    return (
        {s: embed_images(model, c) for s, c in condensed.items()},
        embed_images(model, test),
    )


def probe_trainer(
    features: dict[str, np.ndarray],
    test_features: np.ndarray,
    condensed: dict[str, ImageSet],
    n_classes: int,
    max_iter: int,
):
    """The contributions' value function over ``condensed``, scored on the test set.

    A logistic probe on the shared model's frozen features (:func:`site_features`),
    fitted on a coalition's condensed sets with their soft labels where the
    generators have them.
    """
    return linear_probe_trainer(
        features,
        {
            s: c.labels if c.soft_labels is None else c.soft_labels
            for s, c in condensed.items()
        },
        test_features,
        n_classes,
        max_iter=max_iter,
    )


def site_contributions(
    store: RunStore,
    model: nn.Module,
    condensed: dict[str, ImageSet],
    test_path: Path | None,
    cfg: Config,
) -> dict | None:
    """Site-alone, leave-one-out and Shapley values of the accepted sites.

    Value of a coalition: a logistic probe on the shared model's frozen
    penultimate features, fitted on the coalition's condensed sets (with the
    generators' soft labels where they have a label head) and scored on the
    coordinator's held-out test set. One probe per coalition (2^n for n ≤ 8),
    so the values cost seconds, not 2^n trainings of the shared model.

    Written to ``contributions.json`` (and ``contribution:<site>`` metrics) and
    reused while the accepted sites and the shared model are the same; a round
    that changes either recomputes them. ``None`` without a test set.
    """
    if test_path is None or not cfg.contributions.enabled or not condensed:
        return None
    sites = sorted(condensed)
    weights = store.dir / "models" / "shared_vit.safetensors"
    model_hash = (
        hashlib.sha256(weights.read_bytes()).hexdigest()[:16]
        if weights.is_file()
        else ""
    )
    cached = store.read_json(CONTRIBUTIONS) or {}
    if (
        cached.get("sites") == sites
        and cached.get("model_sha256") == model_hash
        and "sample_quality" in cached  # absent: written before sample quality
    ):
        return cached
    settings = cfg.contributions
    test = load_npz(test_path, classes=list(cfg.data.classes), empty_class="skip")
    n_classes = len(test.class_names)
    features, test_features = site_features(model, condensed, test)
    train = probe_trainer(
        features, test_features, condensed, n_classes, settings.probe_max_iter
    )
    result = compute_contributions(
        CoalitionPredictions(tuple(sites), len(test), n_classes, train),
        test.labels,
        test.class_names,
        n_bootstrap=settings.n_bootstrap,
        seed=cfg.training.seed,
        n_permutations=settings.permutations,
        truncation_tol=settings.truncation_tol,
    )
    out = {
        "sites": sites,
        "model_sha256": model_hash,
        "value_function": "logistic probe on the shared model's frozen "
        "features, condensed IPC sets, held-out test set",
        "n_test": len(test),
        **result.as_record(),
        "sample_quality": {
            site: sample_quality(
                test_features,
                features[site],
                n_bootstrap=settings.n_bootstrap,
                seed=cfg.training.seed,
            )
            for site in sites
        },
    }
    store.write_json(CONTRIBUTIONS, out)
    for site, entry in out["auc"]["sites"].items():
        store.put_metrics(
            f"contribution:{site}",
            {
                f"{kind}{suffix}": entry[kind][field]
                for kind in ("shapley", "loo", "alone")
                for field, suffix in (
                    ("mean", ""),
                    ("ci_low", "-low"),
                    ("ci_high", "-high"),
                )
                if entry[kind][field] is not None  # NaN: nothing to measure
            },
        )
    store.log(
        "info", f"contributions of {len(sites)} site(s) ({result.method} Shapley)"
    )
    return out
