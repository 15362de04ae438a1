"""Phase II: fine-tune the generator by logit matching against the ViT teacher.

``L_total = L_n + λ·L_g`` (seed 000 eqs. 4-5) with
``L_n = MSE(n(S), n(x))`` between the teacher's logits of a synthetic batch and
of a real batch. The batches are *class-matched*: the generator draws image i
with the label of real image i, so each synthetic sample is pulled towards the
teacher's view of a real image of its own class (see ``docs/decisions.md``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import GanLoss
from ..models.classifiers import classifier_logits
from .batches import BatchSampler, dihedral_augment
from .distributed import DistInfo, unwrap, wrap_ddp
from .paired_augment import PairTransform
from .phase1_wgan import (
    GanModels,
    adversarial_loss,
    model_device,
    repeated_critic_updates,
)


class LogitMatchingTask(nn.Module):
    """Generator + frozen teacher + critic; ``forward`` returns the losses.

    Parameters
    ----------
    generator : the attention generator being fine-tuned.
    teacher : the site's fine-tuned ViT (frozen here).
    critic : the phase-I critic, giving the adversarial term L_g.
    lambda_g : weight λ of L_g in eq. (5).
    loss : the adversarial objective of phase I, which L_g keeps.
    """

    def __init__(
        self,
        generator: nn.Module,
        teacher: nn.Module,
        critic: nn.Module,
        lambda_g: float,
        loss: GanLoss = "wgan-gp",
    ):
        super().__init__()
        if lambda_g < 0:
            raise ValueError("lambda_g must be non-negative")
        self.generator = generator
        self.teacher = teacher.eval().requires_grad_(False)
        self.critic = critic
        self.lambda_g = lambda_g
        self.loss = loss

    def prepare_distributed(self, info: DistInfo) -> None:
        """Wrap only the generator in DDP; the teacher stays frozen and local."""
        self.teacher.eval().requires_grad_(False)
        self.generator = wrap_ddp(self.generator, info)

    def forward(
        self,
        real: torch.Tensor,
        labels: torch.Tensor,
        z: torch.Tensor,
        transform: PairTransform | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses for one class-matched pair of batches (real and synthetic).

        ``transform``, when given, is applied to both batches before the teacher
        (not before the critic, which learnt un-transformed images in phase I).
        """
        synthetic = self.generator(z, labels)
        seen_real, seen_synthetic = real, synthetic
        if transform is not None:
            seen_real, seen_synthetic = transform(real), transform(synthetic)
        with torch.no_grad():
            target = classifier_logits(self.teacher, seen_real)
        loss_n = F.mse_loss(classifier_logits(self.teacher, seen_synthetic), target)
        loss_g = adversarial_loss(self.critic, synthetic, labels, self.loss)
        return {
            "loss": loss_n + self.lambda_g * loss_g,
            "loss/n": loss_n.detach(),
            "loss/g": loss_g.detach(),
            "synthetic": synthetic,
        }


def phase2_step(
    task: LogitMatchingTask,
    gan: GanModels,
    sampler: BatchSampler,
    np_rng: np.random.Generator,
    torch_rng: torch.Generator,
    batch_size: int,
    critic_steps: int,
    lambda_gp: float,
    augment: bool = True,
) -> dict[str, float]:
    """One generator update on ``L_total``, then ``critic_steps`` critic updates.

    With ``augment`` each real/synthetic pair goes through the same random
    differentiable transform before the teacher (:mod:`.paired_augment`).

    The critic keeps training on the fine-tuned generator's samples so that
    L_g stays a meaningful estimate (for WGAN-GP, of the Wasserstein distance)
    instead of a fixed target the generator could exploit.
    """
    gen = unwrap(task.generator)
    real, labels = sampler.draw(np_rng, batch_size)
    real = dihedral_augment(real, np_rng).to(model_device(gen))
    labels = labels.to(real.device)
    z = gen.sample_noise(batch_size, torch_rng)
    transform = PairTransform.draw(batch_size, torch_rng) if augment else None
    out = task(real, labels, z, transform)
    gan.opt_g.zero_grad(set_to_none=True)
    out["loss"].backward()
    gan.opt_g.step()
    gan.generator_stepped()
    logs = {
        "loss/gen/total": out["loss"].item(),
        "loss/gen/logit": out["loss/n"].item(),
        "loss/gen/adv": out["loss/g"].item(),
    }
    # fp32 as before: this phase predates bf16 and has not been timed under it.
    logs.update(
        repeated_critic_updates(
            gan,
            real,
            out["synthetic"],
            labels,
            critic_steps,
            lambda_gp,
            torch_rng,
            task.loss,
        )
    )
    return logs
