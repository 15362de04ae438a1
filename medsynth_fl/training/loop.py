"""The step loop shared by every stage: per-step seeds, progress, checkpoints, stop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .checkpoint import StopFlag, StopRequested
from .distributed import DistInfo, any_rank, mean_over_ranks
from .reporting import Reporter
from .seeding import step_rngs

StepFn = Callable[[int, np.random.Generator, torch.Generator], dict[str, float]]


@dataclass
class LoopContext:
    """What every stage needs besides its own models."""

    info: DistInfo = field(default_factory=DistInfo)
    seed: int = 0
    reporter: Reporter = field(default_factory=lambda: Reporter(enabled=False))
    stop: StopFlag = field(default_factory=StopFlag)
    checkpoint_every: int = 0  # 0: never (downstream training)
    save: Callable[[str, int], None] | None = None  # save(stage, next_step)


def run_stage(
    ctx: LoopContext, stage: str, total: int, start: int, step_fn: StepFn
) -> None:
    """Run ``step_fn`` for steps ``start..total-1`` of ``stage``.

    Each step gets generators seeded from (seed, stage, step, rank), so that a
    resumed stage repeats the uninterrupted one exactly. A checkpoint is saved
    every ``checkpoint_every`` steps and when a stop is requested; then
    :class:`StopRequested` is raised.
    """
    with ctx.reporter.stage(stage, total, start) as bar:
        for step in range(start, total):
            np_rng, torch_rng = step_rngs(ctx.seed, stage, step, ctx.info.rank)
            logs = step_fn(step, np_rng, torch_rng)
            bar.step(step, mean_over_ranks(ctx.info, logs))
            stop = any_rank(ctx.info, ctx.stop.requested)
            due = ctx.checkpoint_every and (step + 1) % ctx.checkpoint_every == 0
            if ctx.save is not None and (due or stop):
                ctx.save(stage, step + 1)
            if stop:
                raise StopRequested(f"stopped in {stage} after step {step + 1}")
