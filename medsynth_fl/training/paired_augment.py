"""Differentiable paired augmentation for phase II (DSA, Zhao & Bilen 2021).

Phase II pulls the teacher's logits of synthetic image i towards its logits of
real image i. Without augmentation the generator can satisfy a fixed teacher
with pixel patterns only that network reads (the benchmark's teacher scored
its synthetic set at AUC 0.96 while a fresh ViT trained on it reached 0.59 on
real images). Applying one random transform to *both* images of a pair, and
differentiably to the synthetic one, makes the match hold across flips,
rotations, shifts, zoom and colour changes, which an adversarial pattern does
not survive. See ``docs/decisions.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batches import dihedral

# Ranges follow DSA's defaults, narrowed where dermoscopy needs it: colour is a
# diagnostic cue, so brightness/saturation/contrast move by at most ±20 %.
MAX_SHIFT = 0.125  # fraction of the image side
SCALE_RANGE = (0.9, 1.1)
BRIGHTNESS = 0.2  # additive, images in [-1, 1]
SATURATION = (0.8, 1.2)
CONTRAST = (0.8, 1.2)


@dataclass(frozen=True)
class PairTransform:
    """Random parameters for a batch of pairs; one set per pair index."""

    flip: torch.Tensor  # [N] bool
    quarter_turns: torch.Tensor  # [N] int in 0..3
    theta: torch.Tensor  # [N, 2, 3] affine matrices (zoom + shift)
    brightness: torch.Tensor  # [N, 1, 1, 1]
    saturation: torch.Tensor  # [N, 1, 1, 1]
    contrast: torch.Tensor  # [N, 1, 1, 1]

    @classmethod
    def draw(cls, n: int, rng: torch.Generator) -> PairTransform:
        """Draw parameters for ``n`` pairs from ``rng`` (reproducible per step)."""

        def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(*shape, generator=rng)

        scale = uniform(*SCALE_RANGE, n)
        shift = uniform(-2 * MAX_SHIFT, 2 * MAX_SHIFT, n, 2)  # grid spans [-1, 1]
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
        theta[:, :, 2] = shift
        return cls(
            flip=torch.rand(n, generator=rng) < 0.5,
            quarter_turns=torch.randint(0, 4, (n,), generator=rng),
            theta=theta,
            brightness=uniform(-BRIGHTNESS, BRIGHTNESS, n, 1, 1, 1),
            saturation=uniform(*SATURATION, n, 1, 1, 1),
            contrast=uniform(*CONTRAST, n, 1, 1, 1),
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Apply to a batch ``[N, C, H, W]`` in [-1, 1]; differentiable in ``x``."""
        if len(x) != len(self.flip):
            raise ValueError(f"batch of {len(x)} images for {len(self.flip)} pairs")
        x = dihedral(x, self.flip, self.quarter_turns)
        grid = F.affine_grid(self.theta.to(x), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
        x = x + self.brightness.to(x)
        grey = x.mean(dim=1, keepdim=True)
        x = grey + (x - grey) * self.saturation.to(x)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        # No clamp: it would cut the generator's gradient at saturated pixels.
        return mean + (x - mean) * self.contrast.to(x)
