"""Discriminator F_a of seed 000 §3.1: 9 convolutions and 2 fully connected layers.

It is class-conditional through a projection term (Miyato & Koyama 2018):
``F(x, y) = fc2(h) + <embed(y), h>`` with ``h = fc1(conv(x))``, so that phase I
teaches the generator each class, not only the image distribution. It never
leaves the site.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrize import is_parametrized

from .generator import plain_conv, sn_conv


def _linear(in_f: int, out_f: int, spectral_norm: bool) -> nn.Module:
    layer = nn.Linear(in_f, out_f)
    return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer


class Critic(nn.Module):
    """WGAN critic with 9 convolutions (4 of stride 2) and 2 fully connected layers.

    Parameters
    ----------
    image_size : side of the square input image (multiple of 16).
    num_classes : number of classes for the projection term.
    ndf : channels of the first convolution (doubled at strides, capped at 8·ndf).
    fc_hidden : width of the first fully connected layer.
    spectral_norm : spectral normalisation on every layer (WGAN-GP alone by default).
    """

    N_CONV = 9
    N_FC = 2

    def __init__(
        self,
        image_size: int,
        num_classes: int,
        ndf: int = 64,
        fc_hidden: int = 256,
        spectral_norm: bool = False,
    ):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size {image_size} must be a multiple of 16")
        conv = sn_conv if spectral_norm else plain_conv
        # (out_channels, stride) for the 9 convolutions: 3x3 stride 1 refines,
        # 4x4 stride 2 halves. No batch norm: it breaks the per-sample gradient
        # penalty of WGAN-GP (Gulrajani et al. 2017).
        widths = [1, 1, 2, 2, 4, 4, 8, 8, 8]
        strides = [1, 2, 1, 2, 1, 2, 1, 2, 1]
        layers: list[nn.Module] = []
        in_ch = 3
        for width, stride in zip(widths, strides, strict=True):
            kernel = 4 if stride == 2 else 3
            layers += [conv(in_ch, ndf * width, kernel, stride, 1), nn.LeakyReLU(0.2)]
            in_ch = ndf * width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(4)  # any size → 4×4 before the FC layers
        self.fc1 = _linear(in_ch * 16, fc_hidden, spectral_norm)
        self.act = nn.LeakyReLU(0.2)
        self.fc2 = _linear(fc_hidden, 1, spectral_norm)
        self.class_embed = nn.Embedding(num_classes, fc_hidden)
        nn.init.normal_(self.class_embed.weight, std=0.02)
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation for the leaky-ReLU layers, zero biases.

        PyTorch's default initialisation shrinks the signal at each of the 11
        layers: the input gradient of a fresh critic was ~6e-5, so the gradient
        penalty sat at 1 and the Wasserstein term taught nothing for hundreds of
        steps. He initialisation starts the input gradient near 1, where WGAN-GP
        wants it.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                weight = (
                    m.parametrizations.weight.original
                    if is_parametrized(m)
                    else m.weight
                )
                nn.init.kaiming_normal_(weight, a=0.2, nonlinearity="leaky_relu")
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``h`` (after fc1), used by the projection term."""
        return self.act(self.fc1(self.pool(self.features(x)).flatten(1)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Critic score per image (higher = more real), shape ``[N]``."""
        h = self.forward_features(x)
        return self.fc2(h).squeeze(1) + (self.class_embed(y) * h).sum(dim=1)
