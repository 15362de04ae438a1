"""Phase I: WGAN-GP pre-training of the attention generator (seed 000 eqs. 2-3).

Pure loss functions plus one step function. The critic is trained to score real
images high; ``critic_loss = E[F(s)] − E[F(x)] + λ·GP`` and
``generator_loss = −E[F(s)]`` (Gulrajani et al. 2017).

``loss="lsgan"`` swaps in the least-squares objective (Mao et al. 2017), the
unregularised GAN that seed 004 shows memorising a small training set; the
privacy benchmark's positive control uses it with ``lambda_gp = 0``.

``loss="hinge"`` is the objective of SNGAN/BigGAN (Miyato et al. 2018), used
with the spectrally normalised projection critic of :mod:`..models.cgan`:
``E[relu(1 − F(x))] + E[relu(1 + F(s))]`` for the critic, ``−E[F(s)]`` for the
generator. With ``diffaugment`` both real and fake batches pass through an
independent random differentiable transform before the critic (DiffAugment,
Zhao et al. 2020), which keeps a critic from memorising a small site's images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ..config import GanLoss
from .batches import BatchSampler, dihedral_augment
from .distributed import unwrap
from .paired_augment import PairTransform
from .precision import autocast


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
    if loss == "hinge":
        return F.relu(1 - real_scores).mean() + F.relu(1 + fake_scores).mean()
    return fake_scores.mean() - real_scores.mean()


def generator_loss(
    fake_scores: torch.Tensor, loss: GanLoss = "wgan-gp"
) -> torch.Tensor:
    """Adversarial generator loss (the L_g of eq. 5).

    ``wgan-gp`` and ``hinge``: ``−E[F(s)]``; ``lsgan``: ``½E[(F(s) − 1)²]``.
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
    ema: AveragedModel | None = None  # EMA of the generator: sampled and shipped
    precision: str = "fp32"  # fp32 | bf16 (autocast of the forward passes)

    def generator_stepped(self) -> None:
        """Fold the generator's new weights into its EMA copy (when kept)."""
        if self.ema is not None:
            self.ema.update_parameters(unwrap(self.generator))


def warmup_ema_decay(decay: float, n_averaged: int) -> float:
    """The EMA decay after ``n_averaged`` updates: ``min(decay, (1 + n) / (10 + n))``.

    A fixed 0.999 from step 0 keeps ~1/e of the *initial* weights for 1,000
    steps: at the CPU preset's budgets the shipped EMA lagged the generator
    badly (teacher bal-acc 0.12–0.17 against 0.20–0.33 for the live weights
    over 1,500 steps, docs/decisions.md). The warm-up (TensorFlow's
    ``ExponentialMovingAverage(num_updates=…)``) averages over roughly the last
    ``n/10`` steps early on and reaches ``decay`` after ``9·decay/(1−decay)`` steps.
    """
    return min(decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def warmup_ema_multi_avg_fn(decay: float):
    """``AveragedModel``'s ``multi_avg_fn`` for an EMA with :func:`warmup_ema_decay`."""

    @torch.no_grad()
    def update(ema_params: list, model_params: list, n_averaged: torch.Tensor):
        d = warmup_ema_decay(decay, int(n_averaged))
        if torch.is_floating_point(ema_params[0]):
            torch._foreach_lerp_(ema_params, model_params, 1 - d)
        else:  # integer buffers: copied as the fixed-decay EMA would round them
            for p_ema, p_model in zip(ema_params, model_params, strict=True):
                p_ema.copy_(p_ema * d + p_model * (1 - d))

    return update


def make_ema(generator: nn.Module, decay: float) -> AveragedModel | None:
    """An exponential moving average of ``generator`` (buffers too); None if off.

    Sampling from the EMA weights is the standard fix for a GAN generator that
    oscillates around a good solution (Yazıcı et al. 2019; BigGAN). The
    decay ramps up from 0.1 (:func:`warmup_ema_decay`); the update count lives
    in the ``AveragedModel``'s ``n_averaged`` buffer, so a resumed run continues
    the same schedule.
    """
    if decay <= 0:
        return None
    return AveragedModel(
        generator, multi_avg_fn=warmup_ema_multi_avg_fn(decay), use_buffers=True
    )


@torch.no_grad()
def standing_batch_norm_stats(
    generator: nn.Module,
    classes: list[int],
    seed: int,
    batches: int = 32,
    batch_size: int = 64,
) -> None:
    """Recompute the generator's batch-norm running statistics from its own weights.

    An EMA generator's running statistics are an average of the live
    generator's, not the statistics of the averaged weights, and in eval mode
    they drew saturated colours and cyan borders where train mode drew lesions
    (the 2-seed utility bench: docs/decisions.md). BigGAN's "standing
    statistics" fix: run the generator with batch statistics on ``batches`` batches of
    fresh noise and class-balanced labels from ``classes``, and store the plain
    average of the batch statistics. Needs no data, only the generator; seeded,
    so a resumed run computes the same statistics. ``swa_utils.update_bn``
    cannot do it: it relies on the ``num_batches_tracked`` counter these batch
    norms drop. A generator without batch norm is left as it is.
    """
    norms = [
        m
        for m in generator.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    if not norms:
        return
    device = model_device(generator)
    rng = torch.Generator().manual_seed(seed)
    momenta = [m.momentum for m in norms]
    was_training = generator.training
    # Only the batch norms in train mode: spectral norm's power iteration, run
    # in train mode, would move the weights being measured.
    generator.eval()
    for m in norms:
        m.train()
    label_pool = torch.tensor(classes)
    for i in range(batches):
        for m in norms:
            m.momentum = 1.0 / (i + 1)  # running value = mean over batches so far
        pick = torch.randint(len(label_pool), (batch_size,), generator=rng)
        z = generator.sample_noise(batch_size, rng).to(device)
        generator(z, label_pool[pick].to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    generator.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (DDP wrappers unwrapped)."""
    return next(unwrap(model).parameters()).device


def diff_augment(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """DiffAugment: one random differentiable transform per image."""
    return PairTransform.draw(len(x), rng)(x)


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
    diffaugment: bool = False,
) -> dict[str, float]:
    """``n_critic`` critic updates, then one generator update.

    The fakes of the last critic update are produced with grad and reused for
    the generator update, saving one generator forward pass per step. With
    ``augment`` the real batches get random flips and 90° rotations; with
    ``diffaugment`` the critic sees real and fake images through independent
    random differentiable transforms, and so does the generator's loss.
    """
    gen = unwrap(m.generator)
    device = model_device(gen)
    logs: dict[str, float] = {}
    for i in range(n_critic):
        real, labels = sampler.draw(np_rng, batch_size)
        if augment:
            real = dihedral_augment(real, np_rng)
        real = real.to(device)
        labels = labels.to(device)
        z = gen.sample_noise(batch_size, torch_rng)
        last = i == n_critic - 1
        with torch.set_grad_enabled(last), autocast(device, m.precision):
            fake = m.generator(z, labels)
            if diffaugment:
                real = diff_augment(real, torch_rng)
                fake = diff_augment(fake, torch_rng)
        with autocast(device, m.precision):
            logs = critic_update(
                m.critic,
                m.opt_d,
                real,
                fake.detach(),
                labels,
                lambda_gp,
                torch_rng,
                loss,
            )
    with autocast(device, m.precision):
        loss_g = adversarial_loss(m.critic, fake, labels, loss)
    m.opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    m.opt_g.step()
    m.generator_stepped()
    return {**logs, "loss/gen/adv": loss_g.item()}


def repeated_critic_updates(
    gan: GanModels,
    real: torch.Tensor,
    fake: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    lambda_gp: float,
    torch_rng: torch.Generator,
    loss: GanLoss,
    precision: str = "fp32",
) -> dict[str, float]:
    """``steps`` critic updates against one detached fake batch; the last logs.

    Phase II keeps the critic trained after each generator update, so that its
    adversarial term L_g keeps meaning "looks real" while the generator moves.
    """
    logs: dict[str, float] = {}
    for _ in range(steps):
        with autocast(model_device(gan.critic), precision):
            logs = critic_update(
                gan.critic,
                gan.opt_d,
                real,
                fake.detach(),
                labels,
                lambda_gp,
                torch_rng,
                loss,
            )
    return logs
