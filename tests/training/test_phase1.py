import numpy as np
import pytest
import torch
from torch import nn

from medsynth_fl.models.critic import Critic
from medsynth_fl.models.generator import AttentionGenerator
from medsynth_fl.training.batches import BatchSampler
from medsynth_fl.training.phase1_wgan import (
    GanModels,
    critic_loss,
    critic_update,
    generator_loss,
    gradient_penalty,
    interpolate,
    make_ema,
    phase1_step,
    warmup_ema_decay,
)


class LinearCritic(nn.Module):
    """F(x) = w·x + b: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x, y=None):
        return (x.flatten(1) * self.w).sum(1) + 0.5


def test_gradient_penalty_matches_hand_computation():
    w = torch.tensor([3.0, 4.0, 0.0, 0.0])  # ‖w‖ = 5 → (5 − 1)² = 16
    critic = LinearCritic(w.view(1, -1))
    z = torch.randn(6, 4, requires_grad=True)
    gp = gradient_penalty(critic(z), z)
    torch.testing.assert_close(gp, torch.tensor(16.0))
    gp.backward()  # d/dw (‖w‖−1)² = 2(‖w‖−1) w/‖w‖ = 8/5 · w
    torch.testing.assert_close(critic.w.grad.view(-1), 1.6 * w)


def test_gradient_penalty_is_zero_for_unit_gradient():
    critic = LinearCritic(torch.tensor([[0.6, 0.8]]))
    z = torch.randn(3, 2, requires_grad=True)
    torch.testing.assert_close(gradient_penalty(critic(z), z), torch.tensor(0.0))


def test_wasserstein_losses_signs():
    real, fake = torch.tensor([2.0, 4.0]), torch.tensor([1.0, 1.0])
    assert critic_loss(real, fake).item() == -2.0  # E[F(s)] − E[F(x)]
    assert generator_loss(fake).item() == -1.0


def test_least_squares_losses_match_hand_computation():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 2.0])
    # ½·mean((1−1)², (3−1)²) + ½·mean(0², 2²) = 1 + 1
    assert critic_loss(real, fake, "lsgan").item() == 2.0
    assert generator_loss(fake, "lsgan").item() == 0.5  # ½·mean((0−1)², (2−1)²)


def test_hinge_losses_match_their_definition():
    real, fake = torch.tensor([0.5, 2.0]), torch.tensor([-2.0, 0.0])
    # mean(relu(1 − real)) + mean(relu(1 + fake)) = 0.25 + 0.5
    assert critic_loss(real, fake, "hinge").item() == 0.75
    assert generator_loss(fake, "hinge").item() == 1.0  # −mean(fake)


def test_unknown_gan_loss_is_refused():
    with pytest.raises(ValueError, match="unknown GAN loss 'relativistic'"):
        critic_loss(torch.ones(2), torch.zeros(2), "relativistic")


def test_critic_update_without_penalty_never_builds_interpolates():
    critic = LinearCritic(torch.tensor([[0.6, 0.8]]))
    seen = []
    critic.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    opt = torch.optim.SGD(critic.parameters(), lr=0.1)
    real, fake = torch.ones(3, 1, 1, 2), -torch.ones(3, 1, 1, 2)
    y = torch.zeros(3, dtype=torch.long)
    logs = critic_update(critic, opt, real, fake, y, 0.0, None, "lsgan")
    assert seen == [6] and logs["loss/critic/gp"] == 0.0
    # F = 0.6·1 + 0.8·1 + 0.5 on reals, −1.4 + 0.5 on fakes: gap 2.8
    assert logs["w_dist"] == pytest.approx(2.8)
    critic_update(critic, opt, real, fake, y, 10.0, torch.Generator(), "wgan-gp")
    assert seen[-1] == 9  # real, fake and interpolated in one pass


def test_interpolation_is_per_sample_convex_combination():
    real, fake = torch.ones(4, 3, 2, 2), -torch.ones(4, 3, 2, 2)
    z = interpolate(real, fake, torch.Generator().manual_seed(0))
    per_sample = z.flatten(1)
    assert torch.all(per_sample.max(1).values == per_sample.min(1).values)
    assert z.min() >= -1 and z.max() <= 1


def test_phase1_step_updates_both_networks_and_reports_losses():
    torch.manual_seed(0)
    g, d = (
        AttentionGenerator(16, 3, ngf=4, embed_dim=4),
        Critic(16, 3, ndf=4, fc_hidden=8),
    )
    m = GanModels(
        g,
        d,
        torch.optim.Adam(g.parameters(), 1e-3),
        torch.optim.Adam(d.parameters(), 1e-3),
    )
    sampler = BatchSampler(
        torch.rand(20, 3, 16, 16) * 2 - 1, torch.randint(0, 3, (20,)), 3
    )
    before_g = [p.clone() for p in g.parameters()]
    # A constant offset (fc2.bias) cancels in E[F(s)] − E[F(x)]; embedding rows move
    # only for drawn labels. Every other critic weight must move.
    before_d = {
        n: p.clone()
        for n, p in d.named_parameters()
        if n not in {"fc2.bias", "class_embed.weight"}
    }
    logs = phase1_step(
        m,
        sampler,
        np.random.default_rng(0),
        torch.Generator().manual_seed(0),
        8,
        2,
        10.0,
    )
    assert set(logs) >= {"loss/critic", "loss/critic/gp", "loss/gen/adv", "w_dist"}
    assert all(np.isfinite(v) for v in logs.values())
    assert any(
        not torch.equal(a, b) for a, b in zip(before_g, g.parameters(), strict=True)
    )
    after_d = dict(d.named_parameters())
    assert all(not torch.equal(p, after_d[n]) for n, p in before_d.items())


def test_standing_stats_make_eval_mode_draw_what_train_mode_draws():
    from medsynth_fl.models.cgan import ConditionalResNetGenerator
    from medsynth_fl.training.phase1_wgan import standing_batch_norm_stats

    torch.manual_seed(0)
    g = ConditionalResNetGenerator(8, 3, z_dim=16, ngf=8, attention=False)
    norms = [m for m in g.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:  # stale statistics, as an EMA's averaged buffers can be
        m.running_mean.fill_(2.0)
        m.running_var.fill_(25.0)
    z = g.sample_noise(512, torch.Generator().manual_seed(1))
    y = torch.arange(3).repeat(171)[:512]

    def eval_vs_batch_stats_gap() -> float:
        g.eval()
        with torch.no_grad():
            a = g(z, y)
            for m in norms:  # batch statistics, running ones left as they are
                m.train()
                m.track_running_stats = False
            b = g(z, y)
        for m in norms:
            m.track_running_stats = True
        g.eval()
        return (a - b).abs().mean().item()

    stale = eval_vs_batch_stats_gap()
    standing_batch_norm_stats(g, [0, 1, 2], seed=0, batches=16, batch_size=64)
    after = [m.running_var.clone() for m in norms]
    assert all(m.momentum == 0.1 for m in norms)  # restored
    assert not g.training
    standing_batch_norm_stats(g, [0, 1, 2], seed=0, batches=16, batch_size=64)
    # seeded, and the weights do not move: the same statistics again
    assert all(torch.equal(a, m.running_var) for a, m in zip(after, norms, strict=True))
    assert eval_vs_batch_stats_gap() < 0.1 * stale


def test_ema_decay_warms_up_then_holds():
    assert warmup_ema_decay(0.999, 0) == pytest.approx(0.1)
    assert warmup_ema_decay(0.999, 90) == pytest.approx(0.91)
    assert warmup_ema_decay(0.999, 100_000) == 0.999


def test_warmup_ema_follows_a_moving_model_closely_early_on():
    # A parameter moving from 0 to 1 over 100 updates: a fixed 0.999 EMA would
    # still sit near 0.05; the warm-up keeps within a few steps of the model.
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = make_ema(model, 0.999)
    for step in range(1, 101):
        with torch.no_grad():
            model.weight.fill_(step / 100)
        ema.update_parameters(model)
    lag = model.weight.item() - ema.module.weight.item()
    assert 0 < lag < 0.15
    assert int(ema.n_averaged) == 100  # the schedule's count is saved with the EMA
