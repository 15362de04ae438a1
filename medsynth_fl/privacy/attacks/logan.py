"""LOGAN membership attacks (Hayes et al. 2019; seed 000 §4.5, seed 004 §3.2).

* **White box**: the site's own critic scores each candidate with its label.
  The critic was trained to score its training images as real, so a larger
  critic score means **member**.
* **Black box**: with the shipped generator only, train a *shadow* GAN whose
  "real" data are samples of that generator, then let the shadow critic score
  the candidates. If the generator reproduces its training images, the shadow
  critic learns to call them real: a larger shadow score means **member**.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from ...data.imageset import ImageSet
from ...models.critic import Critic
from ...models.generator import AttentionGenerator
from ...training.batches import BatchSampler
from ...training.phase1_wgan import GanModels, phase1_step
from ...training.seeding import derive_seed
from .._utils import seeded

ShadowLoss = Literal["hinge", "wgan-gp"]


def white_box_scores(critic_scores: np.ndarray) -> np.ndarray:
    """Membership scores of the white-box attack: the critic scores themselves.

    Parameters
    ----------
    critic_scores : the site critic's score per candidate (higher = more real).

    Returns
    -------
    np.ndarray
        Membership scores; larger means "member".
    """
    return np.asarray(critic_scores, dtype=np.float64)


def black_box_scores(shadow_critic_scores: np.ndarray) -> np.ndarray:
    """Membership scores of the black-box attack: the shadow critic's scores.

    Parameters
    ----------
    shadow_critic_scores : the shadow critic's score per candidate.

    Returns
    -------
    np.ndarray
        Membership scores; larger means "member".
    """
    return np.asarray(shadow_critic_scores, dtype=np.float64)


def shadow_critic_kwargs(
    image_size: int, num_classes: int, width: int, loss: ShadowLoss = "hinge"
) -> dict[str, Any]:
    """Return the shadow critic's constructor kwargs (our :class:`Critic`, narrower).

    The hinge shadow GAN's critic is spectrally normalised (its Lipschitz
    control); the WGAN-GP one gets it from the gradient penalty instead.
    """
    return {
        "image_size": image_size,
        "num_classes": num_classes,
        "ndf": width,
        "fc_hidden": 4 * width,
        "spectral_norm": loss == "hinge",
    }


def train_shadow_critic(
    generated: ImageSet,
    steps: int,
    width: int,
    batch_size: int,
    lr: float,
    n_critic: int,
    seed: int,
    loss: ShadowLoss = "hinge",
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> Critic:
    """Train a shadow GAN on generated samples only; return its critic.

    The shadow GAN reuses our generator and critic classes (narrower) and
    phase I's step, with the shipped generator's samples as its "real" data;
    no patient image is involved. ``loss="hinge"`` (the default) trains a
    spectrally normalised critic with the hinge loss, as the cpu preset's
    phase I does: no gradient penalty, whose double backward cost half of
    every shadow step (docs/decisions.md). ``"wgan-gp"`` is the seed's
    WGAN-GP with λ = 10.

    Parameters
    ----------
    generated : samples of the shipped generator with their labels.
    steps : shadow-GAN steps (each ``n_critic`` critic updates + 1 generator).
    width : ``ngf`` of the shadow generator and ``ndf`` of the shadow critic.
    batch_size, lr, n_critic : GAN settings (Adam, β = 0.5, 0.9).
    loss : ``"hinge"`` (SN critic) or ``"wgan-gp"``.
    seed : seed of initialisation and batches.
    device : where to train.
    precision : ``"fp32"`` or ``"bf16"`` (autocast of the forward passes).

    Returns
    -------
    Critic
        The shadow critic, in eval mode.
    """
    k = len(generated.class_names)
    with seeded(derive_seed(seed, "shadow", "init")):
        gen = AttentionGenerator(
            generated.image_size, k, ngf=width, n_res_blocks=2, embed_dim=16
        ).to(device)
        critic = Critic(**shadow_critic_kwargs(generated.image_size, k, width, loss))
    critic = critic.to(device)
    models = GanModels(
        gen,
        critic,
        torch.optim.Adam(gen.parameters(), lr, betas=(0.5, 0.9)),
        torch.optim.Adam(critic.parameters(), lr, betas=(0.5, 0.9)),
        precision=precision,
    )
    x, y = generated.to_tensors()
    sampler = BatchSampler(x, y, k)
    np_rng = np.random.default_rng(derive_seed(seed, "shadow", "batches"))
    torch_rng = torch.Generator().manual_seed(derive_seed(seed, "shadow", "noise"))
    lambda_gp = 10.0 if loss == "wgan-gp" else 0.0
    for _ in range(steps):
        phase1_step(
            models,
            sampler,
            np_rng,
            torch_rng,
            batch_size,
            n_critic,
            lambda_gp,
            loss=loss,
        )
    return critic.eval()
