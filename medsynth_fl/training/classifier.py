"""Training a classifier: the site's teacher and the downstream (shared) model.

The trainer draws its batches from any :class:`~.batches.BatchSource`: an image
set (real images, a condensed set) or a stream of fresh generator samples.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ClassifierTrainConfig, epoch_steps
from ..data.imageset import ImageSet
from ..models.classifiers import build_classifier, classifier_logits
from .augment import augment_batch, mix_batch, one_hot_targets, smooth_targets
from .batches import BatchSource, ImageSetSource
from .distributed import DistInfo, wrap_ddp
from .loop import LoopContext, run_stage


def make_optimizer(
    model: nn.Module, cfg: ClassifierTrainConfig
) -> torch.optim.Optimizer:
    """SGD with momentum 0.9 or AdamW, on trainable params.

    For SGD, seed 000's lr is 0.01 for LoRA.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def total_steps(cfg: ClassifierTrainConfig, n_images: int, world_size: int = 1) -> int:
    """``cfg.steps``, or the steps of ``cfg.epochs`` passes over ``n_images``."""
    if cfg.epochs is None:
        return cfg.steps
    return epoch_steps(cfg.epochs, n_images, cfg.batch_size, world_size)


def make_scheduler(
    opt: torch.optim.Optimizer, warmup_steps: int, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up then cosine decay to zero at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against probability rows ``targets`` (``[N, K]``).

    Equals ``F.cross_entropy(logits, y)`` for one-hot rows of ``y``.
    """
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def classifier_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    soft: torch.Tensor | None,
    cfg: ClassifierTrainConfig,
    num_classes: int,
    np_rng: np.random.Generator,
    torch_rng: torch.Generator,
) -> torch.Tensor:
    """Augment, mix and score one batch (already on the model's device).

    Soft targets are used when ``cfg.label_mode`` is ``soft`` and the batch has
    them; MixUp/CutMix turn hard labels into (mixed) one-hot rows. Otherwise
    plain cross-entropy on the labels, as before soft targets existed.
    """
    x = augment_batch(x, cfg.augment, np_rng, torch_rng)
    targets = soft if cfg.label_mode == "soft" else None
    if cfg.mix != "none":
        if targets is None:
            targets = one_hot_targets(y, num_classes)
        x, targets = mix_batch(x, targets, cfg.mix, cfg.mix_alpha, np_rng)
    logits = classifier_logits(model, x)
    if targets is None:
        return F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    return soft_cross_entropy(logits, smooth_targets(targets, cfg.label_smoothing))


def classifier_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    source: BatchSource,
    np_rng: np.random.Generator,
    torch_rng: torch.Generator,
    cfg: ClassifierTrainConfig,
    num_classes: int,
    device: torch.device,
) -> dict[str, float]:
    """One optimiser step on a batch of ``cfg.batch_size`` drawn from ``source``."""
    x, y, soft = source.draw(np_rng, cfg.batch_size, torch_rng)
    x, y = x.to(device), y.to(device)
    soft = None if soft is None else soft.to(device)
    model.train()
    loss = classifier_loss(model, x, y, soft, cfg, num_classes, np_rng, torch_rng)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return {"loss/cls": loss.item(), "lr": sched.get_last_lr()[0]}


class ClassifierTrainer:
    """A classifier, its optimiser and schedule, trainable for ``steps`` (resumable).

    ``n_images`` is the size of the training set, which sets the number of
    steps when the config counts in epochs. ``image_size`` (the training
    images' side) is needed by ``arch=convnet``.
    """

    def __init__(
        self,
        cfg: ClassifierTrainConfig,
        num_classes: int,
        info: DistInfo,
        n_images: int,
        image_size: int | None = None,
    ):
        self.cfg = cfg
        self.info = info
        self.num_classes = num_classes
        self.steps = total_steps(cfg, n_images, info.world_size)
        self.model = build_classifier(cfg, num_classes, image_size).to(info.device)
        self.ddp_model = wrap_ddp(self.model, info)
        self.opt = make_optimizer(self.model, cfg)
        self.sched = make_scheduler(self.opt, cfg.warmup_steps, self.steps)

    def state_dict(self) -> dict:
        """Model, optimiser and schedule state (for checkpoints)."""
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])

    def fit(
        self,
        train: ImageSet,
        ctx: LoopContext,
        stage: str = "classifier",
        start: int = 0,
        groups: np.ndarray | None = None,
    ) -> nn.Module:
        """Train on ``train`` from step ``start`` to the last step; return the model.

        ``groups`` (one id per image, e.g. lesion ids) weighs each group as one
        image in the batches (:func:`~.batches.class_weights`).
        """
        source = ImageSetSource(train, self.cfg.class_sampling, groups)
        return self.fit_source(source, ctx, stage, start)

    def fit_source(
        self,
        source: BatchSource,
        ctx: LoopContext,
        stage: str = "classifier",
        start: int = 0,
    ) -> nn.Module:
        """Train on batches of ``source`` from step ``start`` to the last step."""

        def step(
            i: int, np_rng: np.random.Generator, torch_rng: torch.Generator
        ) -> dict[str, float]:
            return classifier_step(
                self.ddp_model,
                self.opt,
                self.sched,
                source,
                np_rng,
                torch_rng,
                self.cfg,
                self.num_classes,
                self.info.device,
            )

        run_stage(ctx, stage, self.steps, start, step)
        return self.model.eval()


def train_classifier(
    train: ImageSet,
    cfg: ClassifierTrainConfig,
    seed: int = 0,
    ctx: LoopContext | None = None,
) -> nn.Module:
    """Train a fresh classifier on ``train`` (downstream evaluation, baselines)."""
    ctx = ctx or LoopContext(seed=seed)
    if ctx.seed != seed:
        raise ValueError("seed and ctx.seed disagree")
    torch.manual_seed(seed)  # model initialisation
    trainer = ClassifierTrainer(
        cfg, len(train.class_names), ctx.info, len(train), train.image_size
    )
    return trainer.fit(train, ctx)
