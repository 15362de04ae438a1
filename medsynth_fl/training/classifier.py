"""Training a ViT classifier: the site's teacher and the downstream (shared) model."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ClassifierTrainConfig, epoch_steps
from ..data.imageset import ImageSet
from ..models.vit import build_vit, vit_logits
from .batches import BatchSampler, dihedral_augment
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


def classifier_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    sampler: BatchSampler,
    np_rng: np.random.Generator,
    batch_size: int,
    augment: bool,
    device: torch.device,
) -> dict[str, float]:
    """One cross-entropy step on a batch drawn from ``sampler``."""
    x, y = sampler.draw(np_rng, batch_size)
    if augment:
        x = dihedral_augment(x, np_rng)
    x, y = x.to(device), y.to(device)
    model.train()
    loss = F.cross_entropy(vit_logits(model, x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return {"loss/cls": loss.item(), "lr": sched.get_last_lr()[0]}


class ClassifierTrainer:
    """A ViT, its optimiser and schedule, trainable for ``steps`` (resumable).

    ``n_images`` is the size of the training set, which sets the number of
    steps when the config counts in epochs.
    """

    def __init__(
        self,
        cfg: ClassifierTrainConfig,
        num_classes: int,
        info: DistInfo,
        n_images: int,
    ):
        self.cfg = cfg
        self.info = info
        self.steps = total_steps(cfg, n_images, info.world_size)
        self.model = build_vit(cfg.vit, num_classes).to(info.device)
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
        x, y = train.to_tensors()
        sampler = BatchSampler(
            x, y, len(train.class_names), self.cfg.class_sampling, groups
        )

        def step(
            i: int, np_rng: np.random.Generator, _: torch.Generator
        ) -> dict[str, float]:
            return classifier_step(
                self.ddp_model,
                self.opt,
                self.sched,
                sampler,
                np_rng,
                self.cfg.batch_size,
                self.cfg.augment,
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
    """Train a fresh ViT classifier on ``train`` (downstream evaluation, baselines)."""
    ctx = ctx or LoopContext(seed=seed)
    if ctx.seed != seed:
        raise ValueError("seed and ctx.seed disagree")
    torch.manual_seed(seed)  # model initialisation
    trainer = ClassifierTrainer(cfg, len(train.class_names), ctx.info, len(train))
    return trainer.fit(train, ctx)
