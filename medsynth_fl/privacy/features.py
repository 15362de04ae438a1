"""The feature network φ of the audits: a fixed, randomly initialised conv net.

Decision. Seed 004's recovery attack uses perceptual features (VGG-19,
VGG-Face) and seed 003's attacks compare images in an embedding space. The
coordinator has neither patient data nor, offline, any pretrained weights, so
the candidates were:

* a ViT trained on generated samples only: costly on CPU, and a classifier of
  the generator's labels learns to *discard* the instance details (the exact
  lesion shape, hair, border) that membership depends on; its features would
  also be shaped by the very generator under audit;
* a **fixed random conv net** (chosen): no data, no training, deterministic
  from a seed and a few kB of weights. Random convolutional features are known
  to keep most of an image's local structure and statistics (He, Wang &
  Hopcroft 2016, "A powerful generative model using random weights for the
  deep image representation"; Ulyanov et al. 2018, "Deep image prior"), which
  is what a perceptual distance between an image and its recovery needs, and
  they favour neither members nor non-members.

``forward`` returns the spatial feature map (the φ of eq. 1); ``embed`` pools
it to a 4×4 grid and flattens it (the embedding of the distance attacks).
Any other feature function (e.g. ``classifier_embedding`` of a trusted model) can be
passed to :mod:`medsynth_fl.privacy.signals` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import seeded


class RandomConvFeatures(nn.Module):
    """Three stride-2 3×3 convolutions with ReLU, random weights, never trained.

    Parameters
    ----------
    width : channels of the first stage (then 2·width, 2·width).
    grid : side of the pooled grid of :meth:`embed` (embedding size 2·width·grid²).
    seed : seed of the random weights.
    """

    def __init__(self, width: int = 32, grid: int = 4, seed: int = 0):
        super().__init__()
        if width < 1 or grid < 1:
            raise ValueError("width and grid must be positive")
        self.width = width
        self.grid = grid
        channels = [3, width, 2 * width, 2 * width]
        with seeded(seed):
            layers: list[nn.Module] = []
            for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
                conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)
                nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias.data)  # type: ignore[union-attr]
                layers += [conv, nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.out_channels = channels[-1]
        self.requires_grad_(False)

    @property
    def embed_dim(self) -> int:
        """Length of one embedding vector."""
        return self.out_channels * self.grid**2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial feature map φ(x) of images in [-1, 1], N×C×H/8×W/8."""
        return self.body(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened feature map pooled to ``grid × grid``: N × embed_dim."""
        return F.adaptive_avg_pool2d(self(x), self.grid).flatten(1)
