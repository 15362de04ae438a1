"""Phase II as class-wise distribution matching against a pool of teachers.

Seed 000's phase II pulls each synthetic image towards the logits one frozen
teacher gives a real image of its class. This module instead matches, per
class, the *distribution* of features that a pool of small networks gives the
synthetic and the real batch: the first two moments (mean and ``E[f²]``) of
their log-softmax outputs and of their penultimate embeddings (DM, Zhao &
Bilen 2023; DiM, Wang et al. 2023, which also condenses into a generator).

The pool holds ``K`` ConvNets trained online on the site's real batches, one
SGD step per phase-II step (round-robin), one member re-initialised every
``reinit_every`` steps, staggered: the generator always faces networks at
different stages of training, so no single network's idiosyncratic features
can be fooled, which is what DM's randomly sampled networks buy. The pool,
like the critic, never leaves the site. L_g (the critic's adversarial term) is
kept. See ``docs/decisions.md``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import GanLoss
from ..models.convnet import ConvNet
from .batches import BatchSampler, dihedral_augment
from .distributed import DistInfo, unwrap, wrap_ddp
from .paired_augment import PairTransform
from .phase1_wgan import GanModels, adversarial_loss, repeated_critic_updates
from .precision import autocast
from .seeding import derive_seed

Augment = Callable[[torch.Tensor], torch.Tensor]
POOL_MOMENTUM = 0.9  # SGD momentum of the pool members


def class_moment_loss(
    syn: torch.Tensor,
    syn_y: torch.Tensor,
    real: torch.Tensor,
    real_y: torch.Tensor,
    second_moment: float = 1.0,
) -> torch.Tensor:
    """Class-wise squared distance between the first two feature moments.

    For every class present in both batches, ``‖μ_s − μ_r‖² +
    second_moment·‖E_s[f²] − E_r[f²]‖²`` (sums over the feature dimension),
    averaged over those classes.

    Parameters
    ----------
    syn, real : features ``[N, D]`` and ``[M, D]`` of the synthetic and real batch.
    syn_y, real_y : their integer labels ``[N]`` and ``[M]``.
    second_moment : weight of the second-moment term (0: means only, as DM).

    Returns
    -------
    torch.Tensor
        A scalar, differentiable in ``syn``; a zero that carries ``syn``'s
        graph when no class is in both batches.
    """
    # fp32 whatever the autocast: differences of means over ~1000 dims in bf16
    # lose most of their digits.
    syn, real = syn.float(), real.float()
    n_cls = int(max(syn_y.max(), real_y.max())) + 1
    shared = (torch.bincount(syn_y, minlength=n_cls) > 0) & (
        torch.bincount(real_y, minlength=n_cls) > 0
    )
    if not shared.any():
        return syn.sum() * 0.0

    def moments(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = torch.bincount(y, minlength=n_cls).clamp_min(1).to(x)[:, None]
        mean = x.new_zeros(n_cls, x.shape[1]).index_add(0, y, x) / count
        sq = x.new_zeros(n_cls, x.shape[1]).index_add(0, y, x * x) / count
        return mean[shared], sq[shared]

    (mu_s, sq_s), (mu_r, sq_r) = moments(syn, syn_y), moments(real, real_y)
    per_class = (mu_s - mu_r).square().sum(1)
    if second_moment:
        per_class = per_class + second_moment * (sq_s - sq_r).square().sum(1)
    return per_class.mean()


class TeacherPool:
    """``size`` ConvNets trained online on real batches, re-initialised in turn.

    Not an ``nn.Module`` on purpose: its weights stay out of every
    ``parameters()`` an optimiser of the generator (or of a task holding the
    pool) could be built from, and out of the generator package. Checkpoint it
    with :meth:`state_dict`.

    Parameters
    ----------
    num_classes, image_size : label space and input side of the members.
    generator : seeds the pool; one draw, so the pool is a function of it.
    size : number of members ``K``.
    width, depth : ConvNet channels and conv blocks.
    lr : SGD learning rate of the members (momentum 0.9).
    reinit_every : pool steps between two re-initialisations (of the members
        in turn); each member lives ``reinit_every`` of its own updates, and
        the members' ages are spread evenly. 0: never re-initialise.
    device : where the members live.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        generator: torch.Generator,
        size: int = 4,
        width: int = 64,
        depth: int = 3,
        lr: float = 0.01,
        reinit_every: int = 100,
        device: torch.device | str = "cpu",
    ):
        if size < 1:
            raise ValueError("a teacher pool needs at least one member")
        if reinit_every < 0:
            raise ValueError("reinit_every must be non-negative")
        self.num_classes, self.image_size = num_classes, image_size
        self.width, self.depth, self.lr = width, depth, lr
        self.reinit_every = reinit_every
        self.device = torch.device(device)
        # One draw: every (re)initialisation derives its seed from it, so the
        # pool needs no RNG state of its own to resume bit-exactly.
        self.seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.steps = 0  # pool steps taken (one member update each)
        self.generations = [0] * size  # re-initialisations per member
        self.members: list[ConvNet] = [self._fresh(k, 0) for k in range(size)]
        self.optimizers = [self._optimizer(m) for m in self.members]

    def __len__(self) -> int:
        return len(self.members)

    def parameters(self) -> Iterator[nn.Parameter]:
        """Every member's parameters (for tests and accounting, not optimisers)."""
        for member in self.members:
            yield from member.parameters()

    def _fresh(self, k: int, generation: int) -> ConvNet:
        # PyTorch's default init reads the global RNG: seed it locally and
        # restore it, so the run's per-step seeding is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, "pool", k, generation))
            net = ConvNet(self.num_classes, self.image_size, self.width, self.depth)
        return net.to(self.device).requires_grad_(False)

    def _optimizer(self, member: ConvNet) -> torch.optim.Optimizer:
        return torch.optim.SGD(member.parameters(), lr=self.lr, momentum=POOL_MOMENTUM)

    def update(self, real: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One cross-entropy SGD step of the next member (round-robin) on a batch.

        Then, every ``reinit_every`` pool steps, re-initialise the next member
        in turn (fresh weights and optimiser).
        """
        k = self.steps % len(self)
        member = self.members[k]
        member.requires_grad_(True)
        try:
            with torch.enable_grad():
                loss = F.cross_entropy(member(real), labels)
                self.optimizers[k].zero_grad(set_to_none=True)
                loss.backward()
                self.optimizers[k].step()
                self.optimizers[k].zero_grad(set_to_none=True)
        finally:
            member.requires_grad_(False)
        self.steps += 1
        if self.reinit_every and self.steps % self.reinit_every == 0:
            j = (self.steps // self.reinit_every - 1) % len(self)
            self.generations[j] += 1
            self.members[j] = self._fresh(j, self.generations[j])
            self.optimizers[j] = self._optimizer(self.members[j])
        return {"loss/pool/ce": loss.item()}

    def features(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(log_softmax(logits), embedding)`` of ``x`` for every member.

        Differentiable in ``x``, never in the members' weights.
        """
        out = []
        for member in self.members:
            emb = member.embed(x)
            out.append((F.log_softmax(member.head(emb), dim=1), emb))
        return out

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser states and counters: everything a bit-exact resume needs.

        Copies, so later training does not change a state already taken.
        """
        return {
            "seed": self.seed,
            "steps": self.steps,
            "generations": list(self.generations),
            "members": [copy.deepcopy(m.state_dict()) for m in self.members],
            "optimizers": [copy.deepcopy(o.state_dict()) for o in self.optimizers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (of a pool with the same size and shape)."""
        if len(state["members"]) != len(self):
            raise ValueError(
                f"state of a pool of {len(state['members'])}, not {len(self)}"
            )
        self.seed, self.steps = int(state["seed"]), int(state["steps"])
        self.generations = [int(g) for g in state["generations"]]
        for member, weights in zip(self.members, state["members"], strict=True):
            member.load_state_dict(weights)
        self.optimizers = [self._optimizer(m) for m in self.members]
        for opt, saved in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(saved)


class DistributionMatchingTask(nn.Module):
    """Generator + teacher pool + critic; ``forward`` returns the losses.

    ``loss = λ_logits·L_logits + λ_embed·L_embed + λ_g·L_g``, where ``L_logits``
    and ``L_embed`` are :func:`class_moment_loss` of the pool's log-softmax
    outputs and embeddings, *averaged* over the members (so the weights do not
    change meaning with the pool's size), and ``L_g`` is phase I's adversarial
    term.

    Parameters
    ----------
    generator : the generator being fine-tuned, called as ``generator(z, y)``.
    pool : the site's :class:`TeacherPool` (kept outside ``parameters()``).
    critic : the phase-I critic, giving L_g.
    lambda_g, lambda_logits, lambda_embed : weights of the three terms.
    second_moment : weight of the ``E[f²]`` term inside each moment loss.
    loss : the adversarial objective of phase I, which L_g keeps.
    """

    def __init__(
        self,
        generator: nn.Module,
        pool: TeacherPool,
        critic: nn.Module,
        lambda_g: float,
        lambda_logits: float = 1.0,
        lambda_embed: float = 1.0,
        second_moment: float = 1.0,
        loss: GanLoss = "wgan-gp",
    ):
        super().__init__()
        if min(lambda_g, lambda_logits, lambda_embed, second_moment) < 0:
            raise ValueError("loss weights must be non-negative")
        self.generator = generator
        self.pool = pool  # a plain attribute: not a submodule (see TeacherPool)
        self.critic = critic
        self.lambda_g = lambda_g
        self.lambda_logits, self.lambda_embed = lambda_logits, lambda_embed
        self.second_moment = second_moment
        self.loss = loss

    def prepare_distributed(self, info: DistInfo) -> None:
        """Wrap only the generator in DDP; the pool stays local to each rank."""
        self.generator = wrap_ddp(self.generator, info)

    def forward(
        self,
        real: torch.Tensor,
        real_labels: torch.Tensor,
        z: torch.Tensor,
        syn_labels: torch.Tensor,
        transform: Augment | tuple[Augment, Augment] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Losses for one real batch and one synthetic batch drawn for ``syn_labels``.

        ``transform`` is applied before the pool only (the critic learnt
        un-transformed images): a pair ``(for_real, for_synthetic)``, drawn
        independently since distributions, not pairs, are compared; or one
        callable for both.
        """
        synthetic = self.generator(z, syn_labels)
        t_real, t_syn = transform if isinstance(transform, tuple) else (transform,) * 2
        seen_real = real if t_real is None else t_real(real)
        seen_syn = synthetic if t_syn is None else t_syn(synthetic)
        with torch.no_grad():
            targets = self.pool.features(seen_real)
        loss_logits = loss_embed = synthetic.new_zeros((), dtype=torch.float32)
        for (logp_s, emb_s), (logp_r, emb_r) in zip(
            self.pool.features(seen_syn), targets, strict=True
        ):
            w = self.second_moment
            loss_logits = loss_logits + class_moment_loss(
                logp_s, syn_labels, logp_r, real_labels, w
            )
            loss_embed = loss_embed + class_moment_loss(
                emb_s, syn_labels, emb_r, real_labels, w
            )
        k = len(self.pool)
        loss_logits, loss_embed = loss_logits / k, loss_embed / k
        loss_g = adversarial_loss(self.critic, synthetic, syn_labels, self.loss)
        total = (
            self.lambda_logits * loss_logits
            + self.lambda_embed * loss_embed
            + self.lambda_g * loss_g
        )
        return {
            "loss": total,
            "loss/dm_logits": loss_logits.detach(),
            "loss/dm_embed": loss_embed.detach(),
            "loss/g": loss_g.detach(),
            "synthetic": synthetic,
        }


def phase2_dm_step(
    task: DistributionMatchingTask,
    gan: GanModels,
    sampler: BatchSampler,
    np_rng: np.random.Generator,
    torch_rng: torch.Generator,
    batch_size: int,
    critic_steps: int,
    lambda_gp: float,
    augment: bool = True,
) -> dict[str, float]:
    """Pool update, one generator update, then ``critic_steps`` critic updates.

    The real batch (class-weighted by ``sampler``, flipped and rotated) first
    trains one pool member, then is matched class by class against a synthetic
    batch with the *same labels*, so every class of the step is on both sides.
    With ``augment`` each batch goes through its own random differentiable
    transform before the pool. The generator must offer
    ``sample_noise(n, torch_rng)``.
    """
    gen = unwrap(task.generator)
    device = next(gen.parameters()).device
    real, labels = sampler.draw(np_rng, batch_size)
    real = dihedral_augment(real, np_rng).to(device)
    labels = labels.to(device)
    logs = task.pool.update(real, labels)
    z = gen.sample_noise(batch_size, torch_rng)
    transform = None
    if augment:
        transform = (
            PairTransform.draw(batch_size, torch_rng),
            PairTransform.draw(batch_size, torch_rng),
        )
    with autocast(device, gan.precision):
        out = task(real, labels, z, labels, transform)
    gan.opt_g.zero_grad(set_to_none=True)
    out["loss"].backward()
    gan.opt_g.step()
    gan.generator_stepped()
    logs.update(
        {
            "loss/gen/total": out["loss"].item(),
            "loss/gen/dm_logits": out["loss/dm_logits"].item(),
            "loss/gen/dm_embed": out["loss/dm_embed"].item(),
            "loss/gen/adv": out["loss/g"].item(),
        }
    )
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
            gan.precision,
        )
    )
    return logs
