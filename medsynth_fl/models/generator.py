"""Attention generator of MedSynth (seed 000 §3.1), sampled from noise and a label.

The paper's generator maps an input image ``x`` to a synthetic image
``s = a·x + (1−a)·g`` (eq. 1). A shipped generator must not need any patient
image, so here ``x`` is a *class-conditional noise canvas*: a learned,
low-resolution per-class base image plus a smooth Gaussian noise field, both
upsampled to the output size (see ``docs/decisions.md``). Sampling therefore
needs only ``z`` and ``y``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

ConvFactory = Callable[..., nn.Module]
MASK_INIT_BIAS = -3.0  # sigmoid(-3) ~ 0.05


def plain_conv(*args, **kwargs) -> nn.Module:
    """A 2-D convolution without normalisation."""
    return nn.Conv2d(*args, **kwargs)


def sn_conv(*args, **kwargs) -> nn.Module:
    """A 2-D convolution wrapped in spectral normalisation (Miyato et al. 2018)."""
    return nn.utils.parametrizations.spectral_norm(nn.Conv2d(*args, **kwargs))


def sn_conv_transpose(*args, **kwargs) -> nn.Module:
    """A transposed convolution wrapped in spectral normalisation."""
    return nn.utils.parametrizations.spectral_norm(nn.ConvTranspose2d(*args, **kwargs))


class SelfAttention2d(nn.Module):
    """SAGAN-style self-attention over all positions of a feature map.

    The residual weight ``gamma`` starts at 0, so a fresh block is the identity
    and attention is learned only where it helps.
    """

    def __init__(self, channels: int, conv: ConvFactory):
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = conv(channels, inner, 1)
        self.key = conv(channels, inner, 1)
        self.value = conv(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` plus the ``gamma``-weighted self-attention output."""
        n, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # N×HW×C'
        k = self.key(x).flatten(2).transpose(1, 2)
        v = self.value(x).flatten(2).transpose(1, 2)  # N×HW×C
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.gamma * out.transpose(1, 2).reshape(n, c, h, w)


class ResidualAttentionBlock(nn.Module):
    """Residual block (conv-ReLU-conv) followed by self-attention: one RAB."""

    def __init__(self, channels: int, conv: ConvFactory):
        super().__init__()
        self.body = nn.Sequential(
            conv(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            conv(channels, channels, 3, padding=1),
        )
        self.attention = SelfAttention2d(channels, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the self-attention of ``x`` plus the residual body's output."""
        return self.attention(x + self.body(x))


class PixelNorm(nn.Module):
    """Scale each pixel's feature vector to unit RMS (Karras et al. 2018, ProGAN).

    Spectral norm caps every layer's gain at 1 and ReLU halves the signal, so
    without batch norm the noise reaching the output heads shrank ~100× at
    initialisation and phase I started from one uniform image for every ``z``.
    PixelNorm restores the scale per sample: no batch statistics, no parameters.
    """

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` divided by the RMS of its channels at each position."""
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class EncoderStage(nn.Sequential):
    """A stride-2 convolution that halves the feature map, ReLU, PixelNorm."""

    def __init__(self, in_ch: int, out_ch: int, conv: ConvFactory):
        super().__init__(
            conv(in_ch, out_ch, 4, stride=2, padding=1), nn.ReLU(True), PixelNorm()
        )


class DecoderStage(nn.Sequential):
    """A stride-2 transposed convolution that doubles the map, ReLU, PixelNorm."""

    def __init__(self, in_ch: int, out_ch: int, conv_t: ConvFactory):
        super().__init__(
            conv_t(in_ch, out_ch, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            PixelNorm(),
        )


class MaskBlend(nn.Module):
    """Eq. (1): ``s = a·x + (1−a)·g`` with a sigmoid mask ``a``."""

    def forward(
        self, canvas: torch.Tensor, image: torch.Tensor, mask_logit: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the blended image ``s`` and the mask ``a``."""
        a = torch.sigmoid(mask_logit)
        return a * canvas + (1 - a) * image, a


class NoBlend(nn.Module):
    """Ablation of eq. (1): the output is the generated image ``g`` alone."""

    def forward(
        self, canvas: torch.Tensor, image: torch.Tensor, mask_logit: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the generated image ``g`` and an all-zero mask."""
        return image, torch.zeros_like(mask_logit)


class AttentionGenerator(nn.Module):
    """Encoder → 6 residual attention blocks → decoder with image and mask heads.

    Parameters
    ----------
    image_size : side of the square output image in pixels (multiple of 4).
    num_classes : number of classes the generator is conditioned on.
    ngf : channels of the first encoder stage (doubled at each downsampling).
    n_res_blocks : residual attention blocks in the transition (paper: 6).
    use_mask : blend the canvas with the mask (eq. 1); False gives ``s = g``.
    canvas_downsample : the noise canvas has side ``image_size / canvas_downsample``.
    embed_dim : size of the class embedding, projected onto the bottleneck.
    spectral_norm : spectral normalisation on every convolution (no batch norm).
    """

    def __init__(
        self,
        image_size: int,
        num_classes: int,
        ngf: int = 64,
        n_res_blocks: int = 6,
        use_mask: bool = True,
        canvas_downsample: int = 4,
        embed_dim: int = 16,
        spectral_norm: bool = True,
    ):
        super().__init__()
        if image_size % 4 or image_size % canvas_downsample:
            raise ValueError(
                f"image_size {image_size} must be divisible by 4 and by "
                f"canvas_downsample {canvas_downsample}"
            )
        if num_classes < 1:
            raise ValueError("num_classes must be at least 1")
        conv = sn_conv if spectral_norm else plain_conv
        conv_t = sn_conv_transpose if spectral_norm else nn.ConvTranspose2d
        self.image_size = image_size
        self.num_classes = num_classes
        self.canvas_size = image_size // canvas_downsample
        self.class_canvas = nn.Parameter(
            torch.zeros(num_classes, 3, self.canvas_size, self.canvas_size)
        )
        # Encoder: stem at full size, then two stride-2 stages (side / 4).
        self.encoder = nn.Sequential(
            conv(3, ngf, 7, padding=3),
            nn.ReLU(inplace=True),
            EncoderStage(ngf, ngf * 2, conv),
            EncoderStage(ngf * 2, ngf * 4, conv),
        )
        # The label enters as a per-channel bias on the bottleneck (cheap at side/4)
        # on top of the class-specific canvas.
        self.class_bias = nn.Sequential(
            nn.Embedding(num_classes, embed_dim), nn.Linear(embed_dim, ngf * 4)
        )
        self.transition = nn.Sequential(
            *[ResidualAttentionBlock(ngf * 4, conv) for _ in range(n_res_blocks)]
        )
        self.decoder = nn.Sequential(
            DecoderStage(ngf * 4, ngf * 2, conv_t), DecoderStage(ngf * 2, ngf, conv_t)
        )
        # The output heads are plain convolutions: spectral norm fixes every
        # layer's gain at <= 1, so without batch norm nothing could rescale the
        # decoder's small activations into the image range. The mask starts
        # nearly closed (a ~ 0.05): s starts as g and the canvas is blended in
        # only where training finds it useful.
        self.image_head = plain_conv(ngf, 3, 7, padding=3)
        self.mask_head = plain_conv(ngf, 1, 7, padding=3)
        nn.init.constant_(self.mask_head.bias, MASK_INIT_BIAS)
        self.blend = MaskBlend() if use_mask else NoBlend()

    @property
    def noise_shape(self) -> tuple[int, int, int]:
        """Shape of one noise sample ``z`` (the low-resolution canvas field)."""
        return (3, self.canvas_size, self.canvas_size)

    def sample_noise(
        self, n: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw ``n`` standard-normal noise canvases on the model's device."""
        device = self.class_canvas.device
        z = torch.randn(n, *self.noise_shape, generator=generator, device="cpu")
        return z.to(device)

    def canvas(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The input canvas ``x`` of eq. (1): per-class base + noise, upsampled."""
        low = self.class_canvas[y] + z
        up = F.interpolate(
            low, size=self.image_size, mode="bilinear", align_corners=False
        )
        return torch.tanh(up)

    def forward_parts(
        self, z: torch.Tensor, y: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Return ``{"s", "g", "a", "x"}``: output, generated image, mask, canvas."""
        x = self.canvas(z, y)
        h = self.encoder(x) + self.class_bias(y)[:, :, None, None]
        h = self.decoder(self.transition(h))
        g = torch.tanh(self.image_head(h))
        s, a = self.blend(x, g, self.mask_head(h))
        return {"s": s, "g": g, "a": a, "x": x}

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Synthetic images ``s`` in [-1, 1] for noise ``z`` and labels ``y``."""
        return self.forward_parts(z, y)["s"]

    @torch.no_grad()
    def sample(
        self, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Sample one image per label; only noise and the label are needed.

        Runs in eval mode, so spectral norm's power iteration does not move.
        """
        was_training = self.training
        self.eval()
        try:
            labels = labels.to(self.class_canvas.device)
            return self(self.sample_noise(len(labels), generator), labels)
        finally:
            self.train(was_training)
