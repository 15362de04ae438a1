"""Helpers shared by the privacy modules: evaluation mode, frozen weights, seeding."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


@contextmanager
def evaluating(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then restore its previous mode."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no parameter gradients (gradients still reach the inputs)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        with evaluating(module):
            yield module
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG inside the block without disturbing the caller's."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def noise_shape(generator: nn.Module) -> tuple[int, ...]:
    """Shape of one noise sample of ``generator`` (its ``noise_shape`` attribute)."""
    shape: Any = generator.noise_shape
    return tuple(int(d) for d in shape)


def draw_noise(
    generator: nn.Module, n: int, rng: torch.Generator | None = None
) -> torch.Tensor:
    """Draw ``n`` noise samples with ``generator.sample_noise`` (on its device)."""
    sample: Any = generator.sample_noise
    return sample(n, rng)


def device_of(module: nn.Module) -> torch.device:
    """Device of the first parameter of ``module`` (CPU for a parameterless one)."""
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
