"""Tiny stand-ins for the privacy tests: known generators, critics and image sets."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medsynth_fl.config import AuditConfig
from medsynth_fl.data.imageset import ImageSet

CLASSES = ("a", "b", "c")


def tiny_audit_cfg(**overrides) -> AuditConfig:
    """Audit settings small enough for a test that runs in seconds."""
    values = dict(
        n_generated=16,
        shadow_steps=2,
        encoder_steps=2,
        max_candidates=12,
        batch_size=8,
        shadow_width=4,
        shadow_n_critic=1,
        density_k=3,
    )
    return AuditConfig(**(values | overrides))


def image_set(images: np.ndarray, labels=None, classes=CLASSES) -> ImageSet:
    """An ImageSet of uint8 images (label 0 unless given)."""
    labels = np.zeros(len(images), np.int64) if labels is None else np.asarray(labels)
    return ImageSet(images.astype(np.uint8), labels.astype(np.int64), tuple(classes))


def uniform_images(rng: np.random.Generator, n: int, low: int, high: int, size=16):
    """Random uint8 images with every value in [low, high)."""
    return rng.integers(low, high, size=(n, size, size, 3), dtype=np.uint8)


class UpsampleGenerator(nn.Module):
    """G(z, y) = tanh(nearest-upsample(z)): images are blocky, 4×4 blocks of 16 px.

    Its range is exactly the blocky images, so a recovery encoder can invert it
    on members drawn from G and fails on high-frequency non-members.
    """

    noise_shape = (3, 4, 4)

    def __init__(self, image_size: int = 16):
        super().__init__()
        self.image_size = image_size
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the module a device

    def sample_noise(self, n: int, generator: torch.Generator | None = None):
        return torch.randn(n, *self.noise_shape, generator=generator)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(z, size=self.image_size, mode="nearest")
        return torch.tanh(up) + 0 * self.dummy


class MemorisingCritic(nn.Module):
    """A critic that memorised ``members``: score = −distance to the nearest one."""

    def __init__(self, members: torch.Tensor):
        super().__init__()
        self.register_buffer("members", members.flatten(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return -torch.cdist(x.flatten(1), self.members).min(dim=1).values


class RandomLinearCritic(nn.Module):
    """A fixed random linear critic (it knows nothing about membership)."""

    def __init__(self, dim: int, seed: int = 0):
        super().__init__()
        w = torch.randn(dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("w", w)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w
