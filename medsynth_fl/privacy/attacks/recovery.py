"""Latent-recovery membership attack (seed 004 §3.1, eq. 1).

An encoder ``E`` maps an image to the generator's noise ``z``; the candidate's
label ``y`` is known, so the recovery is ``G(E(x), y)``. ``E`` is trained
*only on generated samples* ``x = G(z, y)`` to minimise
``‖φ(G(E(x), y)) − φ(x)‖²``, so it is blind to the member/non-member split.
A generator that overfits reproduces its training images better than unseen
ones, so a **smaller** recovery error means member: the score is ``−error``
and a larger score means **member**. ``φ`` is the identity (pixel recovery) or
the fixed random conv net of :mod:`medsynth_fl.privacy.features`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ...training.precision import autocast
from ...training.seeding import derive_seed
from .._utils import device_of, draw_noise, frozen, noise_shape, seeded
from ..signals import FeatureFn


class LatentEncoder(nn.Module):
    """Small CNN from an image to a noise tensor of shape ``noise_shape``.

    Parameters
    ----------
    image_size : side of the input images.
    noise_shape : ``(C, h, w)`` for the attention generator's spatial noise, or
        ``(D,)`` for a generator with a flat latent (the class-conditional GAN);
        a flat latent is read out of a 4 × 4 map by one linear layer.
    width : channels of the first convolution (doubled once, at most).
    """

    def __init__(self, image_size: int, noise_shape: tuple[int, ...], width: int = 32):
        super().__init__()
        if len(noise_shape) not in (1, 3):
            raise ValueError(
                f"noise_shape must be (C, h, w) or (D,), got {noise_shape}"
            )
        self.noise_shape = tuple(int(d) for d in noise_shape)
        flat = len(self.noise_shape) == 1
        h = w = min(4, image_size) if flat else 0
        if not flat:
            _, h, w = self.noise_shape
        n_down = max(int(math.log2(image_size / max(h, w))), 0)
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2)]
        ch = width
        for _ in range(n_down):
            out = min(2 * ch, 2 * width)
            layers += [nn.Conv2d(ch, out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.AdaptiveAvgPool2d((h, w)))
        if flat:
            layers += [nn.Flatten(), nn.Linear(ch * h * w, self.noise_shape[0])]
        else:
            layers.append(nn.Conv2d(ch, self.noise_shape[0], 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Recovered noise ``E(x)`` for images in [-1, 1]."""
        return self.body(x)


def encoder_kwargs(image_size: int, noise_shape: tuple[int, ...]) -> dict[str, Any]:
    """Return the constructor kwargs of a :class:`LatentEncoder` for a generator."""
    return {"image_size": image_size, "noise_shape": tuple(noise_shape), "width": 32}


@torch.no_grad()
def _image_size(generator: nn.Module, label: int) -> int:
    """Side of the generator's images, from one sample (caller sets eval mode)."""
    y = torch.tensor([label], device=device_of(generator))
    z = draw_noise(generator, 1, torch.Generator().manual_seed(0))
    return int(generator(z, y).shape[-1])


def train_recovery_encoder(
    generator: nn.Module,
    phi: FeatureFn,
    labels: list[int],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    precision: str = "fp32",
) -> LatentEncoder:
    """Train one ``E`` for ``phi`` (:func:`train_recovery_encoders` with one φ)."""
    return train_recovery_encoders(
        generator, {"phi": phi}, labels, steps, batch_size, lr, seed, precision
    )["phi"]


def train_recovery_encoders(
    generator: nn.Module,
    phis: dict[str, FeatureFn],
    labels: list[int],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    precision: str = "fp32",
) -> dict[str, LatentEncoder]:
    """Train one ``E`` per φ on fresh generated samples (recovery loss, eq. 1).

    The encoders see the same generated batch at every step: drawing it once
    for all of them saves a generator pass per encoder and step, and each
    encoder's loss and optimiser stay its own.

    Parameters
    ----------
    generator : the shipped generator (kept frozen and in eval mode).
    phis : name → feature function φ of the loss (``nn.Identity()`` for pixels).
    labels : the class indices to draw ``y`` from (the generator's classes).
    steps : Adam steps.
    batch_size : generated samples per step.
    lr : Adam learning rate.
    seed : seed of the encoders' initialisation, the noise and the labels.
    precision : ``"fp32"`` or ``"bf16"`` (autocast of the forward passes; the
        loss is taken in fp32).

    Returns
    -------
    dict of str to LatentEncoder
        The trained encoders, in eval mode, under the names of ``phis``.
    """
    if not labels:
        raise ValueError("labels must name at least one class")
    device = device_of(generator)
    rng = torch.Generator().manual_seed(derive_seed(seed, "encoder", "draws"))
    pool = torch.tensor(labels, dtype=torch.long)
    with frozen(generator):
        size = _image_size(generator, labels[0])
        encoders, opts = {}, {}
        for name in phis:
            with seeded(derive_seed(seed, "encoder", "init", name)):
                enc = LatentEncoder(**encoder_kwargs(size, noise_shape(generator)))
            encoders[name] = enc.to(device).train()
            opts[name] = torch.optim.Adam(enc.parameters(), lr)
        for _ in range(steps):
            y = pool[torch.randint(len(pool), (batch_size,), generator=rng)].to(device)
            with torch.no_grad(), autocast(device, precision):
                x = generator(draw_noise(generator, batch_size, rng), y).float()
            for name, phi in phis.items():
                with autocast(device, precision):
                    with torch.no_grad():
                        target = phi(x)
                    recovered = phi(generator(encoders[name](x), y))
                loss = (recovered.float() - target.float()).pow(2).mean()
                opts[name].zero_grad(set_to_none=True)
                loss.backward()
                opts[name].step()
    return {name: enc.eval() for name, enc in encoders.items()}


def membership_scores(recovery_errors: np.ndarray) -> np.ndarray:
    """Membership scores of the recovery attack, ``−recovery error``.

    Parameters
    ----------
    recovery_errors : ``‖φ(G(E(x), y)) − φ(x)‖²`` per candidate.

    Returns
    -------
    np.ndarray
        Membership scores; larger (better recovered) means "member".
    """
    return -np.asarray(recovery_errors, dtype=np.float64)
