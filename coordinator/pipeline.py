"""The coordinator's work after packages arrive, without Flower.

Sample condensed sets, train the shared model on their union or on a stream of
fresh generator samples (``federation.downstream``; resumably), evaluate it
centrally.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medsynth_fl.config import Config
from medsynth_fl.data import load_npz
from medsynth_fl.data.imageset import ImageSet
from medsynth_fl.evaluation import ClassificationMetrics, evaluate_classifier
from medsynth_fl.models.classifiers import build_classifier
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

from .store import RunStore

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


def generator_stream(
    packages: Iterable[GeneratorPackage], class_names: tuple[str, ...]
) -> GeneratorStream:
    """A stream of fresh samples from the packages' generators.

    Each generator draws only its manifest's ``classes_present``; labels are
    indices into ``class_names``, which must be every manifest's label space.
    """
    entries = []
    for pkg in packages:
        names = tuple(pkg.manifest.class_names)
        if names != tuple(class_names):
            raise ValueError(
                f"site {pkg.manifest.site_id}: label space {list(names)} differs "
                f"from the shared one {list(class_names)}"
            )
        present = [names.index(c) for c in pkg.manifest.classes_present]
        entries.append((pkg.build_generator(), present))
    return GeneratorStream(entries, len(class_names))


def shared_model_source(
    cfg: Config, union: ImageSet, packages: Iterable[GeneratorPackage]
) -> BatchSource:
    """What the shared model trains on, under ``federation.downstream``.

    ``"stream"``: fresh samples of the ``packages``' generators at every step;
    ``"fixed"``: the condensed ``union``, sampled once.
    """
    if cfg.federation.downstream == "stream":
        return generator_stream(packages, union.class_names)
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
) -> ClassificationMetrics | None:
    """Evaluate on the coordinator's own held-out real test set, when it has one."""
    if test_path is None:
        return None
    # A held-out set may lack a rare class; AUC and balanced accuracy skip it.
    test = load_npz(test_path, classes=class_names, empty_class="skip")
    return evaluate_classifier(model, test)
