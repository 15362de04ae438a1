"""A class-conditional ResNet GAN that learns at small budgets (BigGAN/SNGAN style).

Seed 000's attention generator takes its label as one bias at the bottleneck:
its output varied 40–60× more with the noise than with the label, and phase I
learnt no class. Here the label modulates *every* stage: each batch norm of the
generator has a per-class scale and shift (conditional batch norm, de Vries et
al. 2017; Miyato & Koyama 2018), and the critic scores the label through a
projection term. One SAGAN self-attention layer keeps seed 000's "attention
generator" idea where it is cheap (at 16 px). See ``docs/decisions.md``.

The optional **label head** turns the generator's last feature map into class
logits, distilled at the site from its teacher on the generator's own samples
(knowledge recycling, seed 002). It reads the generator's internal features,
never an image: it cannot be applied to a patient's image, so shipping it does
not ship a classifier. It lets the coordinator train on soft labels for every
fresh sample it draws.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .generator import SelfAttention2d, plain_conv, sn_conv


class BatchNormNoCounter(nn.BatchNorm2d):
    """Batch norm without the ``num_batches_tracked`` counter.

    The counter only matters for ``momentum=None``; as a 0-d int tensor it
    does not survive Flower's array transport (it arrives with shape ``(1,)``),
    and it is no part of what the generator computes.
    """

    def __init__(self, channels: int, affine: bool = True):
        super().__init__(channels, affine=affine)
        self.num_batches_tracked = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        # A state dict without torch's metadata (safetensors) reads as version
        # 1, for which BatchNorm inserts a counter this module does not have.
        local_metadata = {**local_metadata, "version": self._version}
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)


def sn_linear(in_f: int, out_f: int) -> nn.Module:
    """A linear layer wrapped in spectral normalisation."""
    return nn.utils.parametrizations.spectral_norm(nn.Linear(in_f, out_f))


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm without affine parameters, then a per-class scale and shift."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = BatchNormNoCounter(channels, affine=False)
        self.scale = nn.Embedding(num_classes, channels)
        self.shift = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` and modulate each sample by its class ``y``."""
        h = self.bn(x)
        return h * self.scale(y)[:, :, None, None] + self.shift(y)[:, :, None, None]


class UpBlock(nn.Module):
    """CBN → ReLU → 2× nearest upsample → conv3×3 → CBN → ReLU → conv3×3, residual."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int):
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_ch, num_classes)
        self.conv1 = sn_conv(in_ch, out_ch, 3, padding=1)
        self.bn2 = ConditionalBatchNorm2d(out_ch, num_classes)
        self.conv2 = sn_conv(out_ch, out_ch, 3, padding=1)
        self.skip = sn_conv(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return the block's output at twice the side of ``x``."""
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2.0)
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2.0))


class ConditionalResNetGenerator(nn.Module):
    """``z`` (+ label) → 4×4 map → up blocks with conditional BN → RGB in [-1, 1].

    Parameters
    ----------
    image_size : side of the square output (4 · 2^k).
    num_classes : classes the generator is conditioned on.
    z_dim : size of the noise vector.
    ngf : channels of the last up block (earlier blocks have up to 4× more).
    attention : one self-attention layer after the block that reaches 16 px.
    label_head : add the distilled label head (see the module docstring).
    """

    has_mask = False

    def __init__(
        self,
        image_size: int,
        num_classes: int,
        z_dim: int = 128,
        ngf: int = 32,
        attention: bool = True,
        label_head: bool = True,
    ):
        super().__init__()
        n_up = int(round(math.log2(image_size / 4)))
        if image_size < 8 or 4 * 2**n_up != image_size:
            raise ValueError(f"image_size {image_size} must be 4 · 2^k with k ≥ 1")
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        self.image_size, self.num_classes, self.z_dim = image_size, num_classes, z_dim
        # Channels from 4·ngf at 4 px down to ngf at full size.
        widths = [ngf * min(4, 2 ** (n_up - i)) for i in range(n_up + 1)]
        self.stem = sn_linear(z_dim, widths[0] * 16)
        self.blocks = nn.ModuleList(
            UpBlock(widths[i], widths[i + 1], num_classes) for i in range(n_up)
        )
        sides = [4 * 2 ** (i + 1) for i in range(n_up)]
        self.attention_after = sides.index(16) if attention and 16 in sides else None
        self.attention = (
            SelfAttention2d(widths[self.attention_after + 1], sn_conv)
            if self.attention_after is not None
            else None
        )
        self.out_bn = BatchNormNoCounter(widths[-1])
        self.to_rgb = sn_conv(widths[-1], 3, 3, padding=1)
        self.has_label_head = label_head
        if label_head:
            c = widths[-1]
            self.label_head = nn.Sequential(
                nn.ReLU(),
                plain_conv(c, 2 * c, 3, stride=2, padding=1),
                nn.ReLU(),
                plain_conv(2 * c, 2 * c, 3, stride=2, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(2 * c, num_classes),
            )
            # The label is known: the head learns how far the teacher strays from it.
            self.label_prior = nn.Embedding(num_classes, num_classes)
            nn.init.zeros_(self.label_prior.weight)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """Shape of one noise sample ``z``."""
        return (self.z_dim,)

    @property
    def device(self) -> torch.device:
        """Device of the generator's weights."""
        return self.out_bn.running_mean.device

    def sample_noise(
        self, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n`` standard-normal noise vectors (on the CPU RNG, then moved)."""
        return torch.randn(n, self.z_dim, generator=generator).to(self.device)

    def features(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The last feature map, before the RGB convolution."""
        h = self.stem(z).view(len(z), -1, 4, 4)
        for i, block in enumerate(self.blocks):
            h = block(h, y)
            if i == self.attention_after:
                h = self.attention(h)
        return F.relu(self.out_bn(h))

    def forward_parts(
        self, z: torch.Tensor, y: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``{"s": images}`` plus ``"label_logits"`` when the head exists.

        The head reads the features detached: distilling soft labels never
        changes the images.
        """
        h = self.features(z, y)
        parts = {"s": torch.tanh(self.to_rgb(h))}
        if self.has_label_head:
            parts["label_logits"] = self.label_logits_from(h.detach(), y)
        return parts

    def label_logits_from(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Label-head logits for features ``h`` of samples of class ``y``."""
        return self.label_head(h) + self.label_prior(y)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Synthetic images in [-1, 1] for noise ``z`` and labels ``y``."""
        return torch.tanh(self.to_rgb(self.features(z, y)))

    @torch.no_grad()
    def sample(
        self, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample one image per label in eval mode (running BN statistics)."""
        was_training = self.training
        self.eval()
        try:
            labels = labels.to(self.device)
            return self(self.sample_noise(len(labels), generator), labels)
        finally:
            self.train(was_training)


class DownBlock(nn.Module):
    """(ReLU →) conv3×3 → ReLU → conv3×3 → avg-pool, with a residual shortcut."""

    def __init__(self, in_ch: int, out_ch: int, first: bool, down: bool = True):
        super().__init__()
        self.first, self.down = first, down
        self.conv1 = sn_conv(in_ch, out_ch, 3, padding=1)
        self.conv2 = sn_conv(out_ch, out_ch, 3, padding=1)
        self.skip = sn_conv(in_ch, out_ch, 1) if (in_ch != out_ch or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block output (half the side when ``down``)."""
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        s = x
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.skip is not None:
            # SNGAN's order: the first block pools before its 1×1 shortcut.
            s = self.skip(F.avg_pool2d(s, 2) if self.first and self.down else s)
            if self.down and not self.first:
                s = F.avg_pool2d(s, 2)
        return h + s


class ProjectionCritic(nn.Module):
    """Spectrally normalised ResNet critic with a projection term (Miyato & Koyama).

    ``F(x, y) = w·φ(x) + <embed(y), φ(x)>``: the label enters as an inner
    product with the pooled features, the form that makes a conditional GAN
    learn each class rather than only the image distribution.

    Parameters
    ----------
    image_size : side of the square input (multiple of 8).
    num_classes : classes of the projection term.
    ndf : channels of the first block (doubled twice).
    """

    def __init__(self, image_size: int, num_classes: int, ndf: int = 32):
        super().__init__()
        if image_size % 8:
            raise ValueError(f"image_size {image_size} must be a multiple of 8")
        n_down = int(math.log2(image_size // 4))  # down to 4×4
        widths = [ndf * min(4, 2**i) for i in range(n_down)]
        blocks: list[nn.Module] = []
        in_ch = 3
        for i, w in enumerate(widths):
            blocks.append(DownBlock(in_ch, w, first=i == 0))
            in_ch = w
        blocks.append(DownBlock(in_ch, in_ch, first=False, down=False))
        self.blocks = nn.Sequential(*blocks)
        self.linear = sn_linear(in_ch, 1)
        self.embed = nn.utils.parametrizations.spectral_norm(
            nn.Embedding(num_classes, in_ch)
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features φ(x): global sum of the ReLU'd last block."""
        return F.relu(self.blocks(x)).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Critic score per image (higher = more real), shape ``[N]``."""
        h = self.forward_features(x)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)
