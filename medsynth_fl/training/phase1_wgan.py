"""Phase I: WGAN-GP pre-training of the attention generator (seed 000 eqs. 2-3).

Pure loss functions plus one step function. The critic is trained to score real
images high; ``critic_loss = E[F(s)] − E[F(x)] + λ·GP`` and
``generator_loss = −E[F(s)]`` (Gulrajani et al. 2017).

``loss="lsgan"`` swaps in the least-squares objective (Mao et al. 2017), the
unregularised GAN that seed 004 shows memorising a small training set; the
privacy benchmark's positive control uses it with ``lambda_gp = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np
import torch
from torch import nn

from ..config import GanLoss
from .batches import BatchSampler, dihedral_augment
from .distributed import unwrap


def _check_loss(loss: str) -> None:
    if loss not in get_args(GanLoss):
        raise ValueError(f"unknown GAN loss {loss!r}; known: {get_args(GanLoss)}")


def critic_loss(
    real_scores: torch.Tensor, fake_scores: torch.Tensor, loss: GanLoss = "wgan-gp"
) -> torch.Tensor:
    """Critic loss to minimise, real images scored high.

    ``wgan-gp``: ``E[F(s)] − E[F(x)]``; ``lsgan``:
    ``½E[(F(x) − 1)²] + ½E[F(s)²]``.
    """
    _check_loss(loss)
    if loss == "lsgan":
        return 0.5 * ((real_scores - 1) ** 2).mean() + 0.5 * (fake_scores**2).mean()
    return fake_scores.mean() - real_scores.mean()


def generator_loss(
    fake_scores: torch.Tensor, loss: GanLoss = "wgan-gp"
) -> torch.Tensor:
    """Adversarial generator loss (the L_g of eq. 5).

    ``wgan-gp``: ``−E[F(s)]``; ``lsgan``: ``½E[(F(s) − 1)²]``.
    """
    _check_loss(loss)
    if loss == "lsgan":
        return 0.5 * ((fake_scores - 1) ** 2).mean()
    return -fake_scores.mean()


def interpolate(
    real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Eq. (3): ``z = ε·x + (1−ε)·s`` with one ε ~ U[0, 1] per sample."""
    eps = torch.rand(len(real), 1, 1, 1, generator=generator).to(real.device)
    return eps * real + (1 - eps) * fake


def gradient_penalty(scores: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """``E[(‖∇_z F(z)‖₂ − 1)²]`` for critic ``scores`` computed from ``inputs``.

    ``inputs`` must require grad. The graph is kept so the penalty trains the
    critic (double backward).
    """
    (grad,) = torch.autograd.grad(scores.sum(), inputs, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def critic_update(
    critic: nn.Module,
    opt: torch.optim.Optimizer,
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor,
    lambda_gp: float,
    torch_rng: torch.Generator,
    loss: GanLoss = "wgan-gp",
) -> dict[str, float]:
    """One critic step on a real and a (detached) fake batch with the same labels.

    Real, fake and (when ``lambda_gp > 0``) interpolated images go through the
    critic in one forward pass, so DDP sees exactly one forward per backward.
    ``w_dist`` logs the score gap ``E[F(x)] − E[F(s)]`` (for WGAN-GP, the
    Wasserstein estimate).
    """
    batch = [real, fake]
    if lambda_gp > 0:
        batch.append(interpolate(real, fake, torch_rng).requires_grad_(True))
    scores = critic(torch.cat(batch), labels.repeat(len(batch))).split(len(real))
    real_s, fake_s = scores[0], scores[1]
    total = critic_loss(real_s, fake_s, loss)
    gp = torch.zeros(())
    if lambda_gp > 0:
        gp = gradient_penalty(scores[2], batch[2])
        total = total + lambda_gp * gp
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return {
        "loss/critic": total.item(),
        "loss/critic/gp": gp.item(),
        "w_dist": (real_s.mean() - fake_s.mean()).item(),
    }


def adversarial_loss(
    critic: nn.Module,
    fake: torch.Tensor,
    labels: torch.Tensor,
    loss: GanLoss = "wgan-gp",
) -> torch.Tensor:
    """Generator loss through the critic, with the critic's own weights frozen."""
    module = unwrap(critic)
    module.requires_grad_(False)
    try:
        return generator_loss(module(fake, labels), loss)
    finally:
        module.requires_grad_(True)


@dataclass
class GanModels:
    """The models and optimisers phase I (and phase II's critic updates) step."""

    generator: nn.Module  # possibly DDP-wrapped
    critic: nn.Module  # possibly DDP-wrapped
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer


def phase1_step(
    m: GanModels,
    sampler: BatchSampler,
    np_rng: np.random.Generator,
    torch_rng: torch.Generator,
    batch_size: int,
    n_critic: int,
    lambda_gp: float,
    augment: bool = True,
    loss: GanLoss = "wgan-gp",
) -> dict[str, float]:
    """``n_critic`` critic updates, then one generator update.

    The fakes of the last critic update are produced with grad and reused for
    the generator update, saving one generator forward pass per step. With
    ``augment`` the real batches get random flips and 90° rotations.
    """
    gen = unwrap(m.generator)
    logs: dict[str, float] = {}
    for i in range(n_critic):
        real, labels = sampler.draw(np_rng, batch_size)
        if augment:
            real = dihedral_augment(real, np_rng)
        real = real.to(gen.class_canvas.device)
        labels = labels.to(real.device)
        z = gen.sample_noise(batch_size, torch_rng)
        last = i == n_critic - 1
        with torch.set_grad_enabled(last):
            fake = m.generator(z, labels)
        logs = critic_update(
            m.critic, m.opt_d, real, fake.detach(), labels, lambda_gp, torch_rng, loss
        )
    loss_g = adversarial_loss(m.critic, fake, labels, loss)
    m.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    m.opt_g.step()
    return {**logs, "loss/gen/adv": loss_g.item()}
