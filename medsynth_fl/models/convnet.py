"""The small ConvNet of dataset-distillation work (Zhao et al. 2021, "DC"/"DM").

``depth`` blocks of 3×3 convolution → instance norm → ReLU → 2×2 average
pooling, then one linear layer. It is the standard network of condensation
benchmarks, trains in seconds at 32 px on a CPU, and serves three roles here:
members of phase II's teacher pool, the site's teacher in the CPU presets, and
one of the cross-architecture downstream models.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNet(nn.Module):
    """``depth`` × (conv3×3 → InstanceNorm → ReLU → AvgPool2) → linear.

    Parameters
    ----------
    num_classes : outputs of the linear head.
    image_size : side of the square input (halved ``depth`` times).
    width : channels of every convolution.
    depth : number of conv blocks.
    """

    def __init__(
        self, num_classes: int, image_size: int, width: int = 128, depth: int = 3
    ):
        super().__init__()
        if image_size % (2**depth):
            raise ValueError(
                f"image_size {image_size} must be divisible by 2**depth = {2**depth}"
            )
        layers: list[nn.Module] = []
        in_ch = 3
        for _ in range(depth):
            layers += [
                nn.Conv2d(in_ch, width, 3, padding=1),
                # Instance norm (GroupNorm with one group per channel): no batch
                # statistics, so a batch of one class behaves like a mixed one.
                nn.GroupNorm(width, width, affine=True),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(2),
            ]
            in_ch = width
        self.features = nn.Sequential(*layers)
        self.image_size = image_size
        self.embed_dim = width * (image_size // 2**depth) ** 2
        self.head = nn.Linear(self.embed_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (flattened), shape ``[N, embed_dim]``."""
        if x.shape[-1] != self.image_size:
            x = nn.functional.interpolate(
                x, size=self.image_size, mode="bilinear", antialias=True
            )
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for images in [-1, 1]."""
        return self.head(self.embed(x))
