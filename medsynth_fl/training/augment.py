"""Augmenting classifier batches: kornia transforms; MixUp, CutMix on soft targets.

Images are float NCHW in [-1, 1]. :func:`strong_augment` draws its parameters
per image. kornia samples from torch's global RNG and takes no generator, so it
runs inside :func:`torch.random.fork_rng`, seeded from the step's generator:
the result depends only on that generator (a resumed run repeats it) and the
caller's global RNG state is left as it was.

MixUp and CutMix are written here because torchvision's v2 versions take
integer labels, and the targets here may already be soft (a generator's label
head, label smoothing).
"""

from __future__ import annotations

from functools import cache

import kornia.augmentation as K
import numpy as np
import torch
from torch import nn

from .batches import dihedral_augment

# Dermoscopy has no orientation, but colour is diagnostic: jitter stays mild.
CROP_SCALE = (0.6, 1.0)
ROTATION_DEG = 15.0
JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.02}


@cache
def _strong_pipeline(size: int) -> nn.Module:
    return K.AugmentationSequential(
        K.RandomHorizontalFlip(p=0.5),
        K.RandomRotation90(times=(0, 3), p=1.0),  # with the flip: all 8 dihedral
        K.RandomResizedCrop((size, size), scale=CROP_SCALE),
        # reflection: no black corners, which would mark augmented images
        K.RandomAffine(degrees=ROTATION_DEG, padding_mode="reflection", p=0.5),
        K.ColorJitter(**JITTER, p=0.8),
    )


def strong_augment(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Dihedral turn, resized crop, small rotation and mild colour jitter per image.

    Parameters
    ----------
    x : float images ``[N, 3, H, W]`` in [-1, 1] (square); differentiable.
    rng : seeds the draw of every image's parameters.

    Returns
    -------
    torch.Tensor
        Augmented images, same shape, in [-1, 1].
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=rng))
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        # kornia's colour transforms expect [0, 1]
        out = _strong_pipeline(x.shape[-1])((x + 1) / 2)
    return out.clamp(0, 1) * 2 - 1


def augment_batch(
    x: torch.Tensor, mode: str, np_rng: np.random.Generator, torch_rng: torch.Generator
) -> torch.Tensor:
    """Apply ``ClassifierTrainConfig.augment``: ``none``, ``dihedral`` or ``strong``.

    ``dihedral`` draws from ``np_rng`` exactly as before the modes existed,
    so runs with the default replay bit for bit.
    """
    if mode == "none":
        return x
    if mode == "dihedral":
        return dihedral_augment(x, np_rng)
    if mode == "strong":
        return strong_augment(x, torch_rng)
    raise ValueError(f"unknown augment mode {mode!r}")


def one_hot_targets(
    y: torch.Tensor, num_classes: int, smoothing: float = 0.0
) -> torch.Tensor:
    """Float target rows for integer labels, with optional label smoothing."""
    return smooth_targets(nn.functional.one_hot(y, num_classes).float(), smoothing)


def smooth_targets(t: torch.Tensor, smoothing: float) -> torch.Tensor:
    """``(1 - ε)·t + ε/K``: what ``F.cross_entropy(label_smoothing=ε)`` targets."""
    if smoothing == 0:
        return t
    return t * (1 - smoothing) + smoothing / t.shape[1]


def mixup(
    x: torch.Tensor, t: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al. 2018): a convex pair of images and of their targets.

    Parameters
    ----------
    x : images ``[N, C, H, W]``.
    t : target probability rows ``[N, K]``.
    alpha : λ ~ Beta(alpha, alpha), one λ per batch.
    rng : draws λ and the partner permutation.

    Returns
    -------
    (images, targets)
        ``λ·x + (1-λ)·x[perm]`` and ``λ·t + (1-λ)·t[perm]``.
    """
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]


def cutmix(
    x: torch.Tensor, t: torch.Tensor, alpha: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix (Yun et al. 2019): paste a partner's box; targets by pasted area.

    The box has area ``(1-λ)·H·W`` for λ ~ Beta(alpha, alpha), centred
    uniformly and clipped at the border; the targets use the clipped area.
    """
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    h, w = x.shape[-2:]
    cut = np.sqrt(1 - lam)
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - int(h * cut) // 2, 0), min(cy + int(h * cut) // 2, h)
    x0, x1 = max(cx - int(w * cut) // 2, 0), min(cx + int(w * cut) // 2, w)
    mask = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    mask[y0:y1, x0:x1] = True
    mixed = torch.where(mask, x[perm], x)
    kept = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    return mixed, kept * t + (1 - kept) * t[perm]


def mix_batch(
    x: torch.Tensor,
    t: torch.Tensor,
    mode: str,
    alpha: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply ``ClassifierTrainConfig.mix``; ``both`` picks one of the two per batch."""
    if mode == "none":
        return x, t
    if mode == "both":
        mode = "mixup" if rng.random() < 0.5 else "cutmix"
    if mode == "mixup":
        return mixup(x, t, alpha, rng)
    if mode == "cutmix":
        return cutmix(x, t, alpha, rng)
    raise ValueError(f"unknown mix mode {mode!r}")
