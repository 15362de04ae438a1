import copy

import numpy as np
import pytest
import torch
from torch import nn

from medsynth_fl.models.critic import Critic
from medsynth_fl.training.batches import BatchSampler, dihedral_augment
from medsynth_fl.training.phase1_wgan import GanModels
from medsynth_fl.training.phase2_distribution_matching import (
    DistributionMatchingTask,
    TeacherPool,
    class_moment_loss,
    phase2_dm_step,
)

SIDE, CLASSES = 16, 3


def _pool(seed=0, **kw):
    kw = {"size": 2, "width": 8, "depth": 2, "reinit_every": 3, **kw}
    return TeacherPool(CLASSES, SIDE, torch.Generator().manual_seed(seed), **kw)


def _weights(pool):
    return [p.detach().clone() for p in pool.parameters()]


def _same(a, b):
    return len(a) == len(b) and all(
        torch.equal(x, y) for x, y in zip(a, b, strict=True)
    )


def _batch(n=12, seed=0):
    """Classes differ in spatial pattern (the pool's instance norm hides colour)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % CLASSES
    r = torch.arange(SIDE, dtype=torch.float32)
    stripes = torch.cos(r * np.pi / 2)  # a period of 4 px
    blob = torch.exp(-((r[:, None] - 7.5) ** 2 + (r[None, :] - 7.5) ** 2) / 20)
    patterns = torch.stack(
        [stripes[:, None].expand(SIDE, SIDE), stripes.expand(SIDE, SIDE), 2 * blob - 1]
    )
    x = 0.6 * patterns[y][:, None] + 0.2 * torch.randn(n, 3, SIDE, SIDE, generator=g)
    return x.clamp(-1, 1), y


class _ClassImages(nn.Module):
    """A learned image per class plus a little noise: a generator in miniature."""

    def __init__(self):
        super().__init__()
        self.images = nn.Parameter(torch.zeros(CLASSES, 3, SIDE, SIDE))

    def sample_noise(self, n, generator=None):
        return torch.randn(n, 3, SIDE, SIDE, generator=generator)

    def forward(self, z, y):
        return torch.tanh(self.images[y] + 0.1 * z)


class _MeanCritic(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x, y):
        return self.w * x.flatten(1).mean(1)


# --- class_moment_loss -------------------------------------------------------


def test_moment_loss_is_zero_for_identical_batches():
    f, y = torch.randn(10, 5), torch.arange(10) % 3
    assert class_moment_loss(f, y, f.clone(), y).item() == pytest.approx(0, abs=1e-12)
    # the same class distributions in another order are still a perfect match
    perm = torch.randperm(10)
    assert class_moment_loss(f[perm], y[perm], f, y).item() == pytest.approx(
        0, abs=1e-10
    )


def test_moment_loss_decreases_as_a_class_mean_moves_towards_the_real_one():
    real, y = torch.randn(8, 4), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    losses = []
    for t in (1.0, 0.5, 0.1, 0.0):
        syn = real.clone()
        syn[y == 1] += t * 3.0  # shift class 1 away by t
        losses.append(class_moment_loss(syn, y, real, y, second_moment=0.0).item())
    assert losses[0] > losses[1] > losses[2] > losses[3] == pytest.approx(0, abs=1e-10)
    # means only: a shift of class 1's mean by 3 in 4 dims, averaged over 2 classes
    assert losses[0] == pytest.approx(4 * 9 / 2)


def test_second_moment_sees_a_spread_the_mean_misses():
    real = torch.tensor([[-1.0], [1.0]])
    syn = torch.zeros(2, 1)  # same mean, no spread
    y = torch.zeros(2, dtype=torch.long)
    assert class_moment_loss(syn, y, real, y, second_moment=0.0).item() == 0
    assert class_moment_loss(syn, y, real, y, second_moment=1.0).item() == 1.0


def test_moment_loss_ignores_classes_missing_from_one_side_and_is_differentiable():
    real, ry = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    syn = real[:4].clone().requires_grad_(True)
    sy = ry[:4]
    # class 2 only in the real batch: no loss; class 5 only synthetic: none either
    extra = torch.full((2, 3), 9.0)
    syn2 = torch.cat([syn, extra])
    sy2 = torch.cat([sy, torch.tensor([5, 5])])
    loss = class_moment_loss(syn2, sy2, real, ry)
    assert loss.item() == pytest.approx(0, abs=1e-10)
    # no shared class at all: a zero that still carries syn's graph
    none = class_moment_loss(syn, torch.full((4,), 1), real[:2], ry[:2])
    none.backward()
    assert none.item() == 0 and syn.grad is not None
    shifted = (syn + 1.0).detach().requires_grad_(True)
    class_moment_loss(shifted, sy, real, ry).backward()
    assert shifted.grad.abs().sum() > 0


# --- TeacherPool -------------------------------------------------------------


def test_pool_is_a_function_of_its_seed_and_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    a, b, c = _pool(0), _pool(0), _pool(1)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert _same(_weights(a), _weights(b)) and not _same(_weights(a), _weights(c))
    m0, m1 = a.members
    assert not torch.equal(m0.head.weight, m1.head.weight)  # members differ
    x, y = _batch()
    for _ in range(4):
        a.update(x, y)
        b.update(x, y)
    assert _same(_weights(a), _weights(b))


def test_members_are_updated_round_robin_and_reinitialised_in_turn():
    pool = _pool(reinit_every=3)
    x, y = _batch()
    first = _weights(pool)
    half = len(first) // 2
    for _ in range(3):
        pool.update(x, y)
    # steps 0 and 2 trained member 0, step 1 member 1; at step 3 member 0 restarts
    assert pool.generations == [1, 0]
    restarted = list(pool.members[0].parameters())
    assert _same(restarted, list(pool._fresh(0, 1).parameters()))
    assert not _same(restarted, first[:half])  # new weights, not the first ones
    assert not _same(list(pool.members[1].parameters()), first[half:])  # trained
    for _ in range(3):
        pool.update(x, y)
    assert pool.generations == [1, 1] and pool.steps == 6


def test_pool_state_dict_round_trip_resumes_bit_exactly(tmp_path):
    x, y = _batch()
    x2, y2 = _batch(seed=1)
    a = _pool(0, reinit_every=3)
    for _ in range(4):
        a.update(x, y)
    path = tmp_path / "pool.pt"
    torch.save(a.state_dict(), path)
    # crosses the re-initialisation of member 1 (step 6), while member 0 keeps
    # training on its restored weights and momentum
    for _ in range(3):
        a.update(x2, y2)
    b = _pool(7, reinit_every=3)  # another seed: everything comes from the state
    b.load_state_dict(torch.load(path, weights_only=True))
    for _ in range(3):
        b.update(x2, y2)
    assert _same(_weights(a), _weights(b))
    assert a.generations == b.generations == [1, 1] and a.steps == b.steps
    a_state, b_state = a.state_dict(), b.state_dict()
    for oa, ob in zip(a_state["optimizers"], b_state["optimizers"], strict=True):
        for sa, sb in zip(oa["state"].values(), ob["state"].values(), strict=True):
            assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


def test_pool_state_is_a_copy():
    pool = _pool()
    state = pool.state_dict()
    x, y = _batch()
    pool.update(x, y)
    pool.update(x, y)
    assert not torch.equal(
        state["members"][0]["head.weight"], pool.members[0].head.weight
    )


# --- task and step -------------------------------------------------------------


def _task(gen, pool, **kw):
    return DistributionMatchingTask(gen, pool, _MeanCritic(), lambda_g=0.1, **kw)


def test_teacher_weights_do_not_move_in_the_generators_step():
    gen, pool = _ClassImages(), _pool()
    task = _task(gen, pool)
    x, y = _batch()
    pool.update(x, y)
    before = _weights(pool)
    opt = torch.optim.Adam(gen.parameters(), lr=0.1)
    out = task(x, y, gen.sample_noise(len(y)), y)
    out["loss"].backward()
    opt.step()
    assert gen.images.grad.abs().sum() > 0
    assert all(p.grad is None for p in pool.parameters())
    assert _same(before, _weights(pool))
    # the pool is no submodule: an optimiser over the task cannot reach it
    pool_ids = {id(p) for p in pool.parameters()}
    assert pool_ids.isdisjoint(id(p) for p in task.parameters())
    assert pool_ids.isdisjoint(id(p) for g in opt.param_groups for p in g["params"])


def test_loss_terms_are_weighted_and_averaged_over_members():
    gen, pool = _ClassImages(), _pool(size=3)
    x, y = _batch()
    z = gen.sample_noise(len(y), torch.Generator().manual_seed(0))
    out = _task(gen, pool, lambda_logits=2.0, lambda_embed=0.5)(x, y, z, y)
    expected = 2.0 * out["loss/dm_logits"] + 0.5 * out["loss/dm_embed"]
    expected = expected + 0.1 * out["loss/g"]
    torch.testing.assert_close(out["loss"].detach(), expected)
    feats_s = pool.features(out["synthetic"].detach())
    feats_r = pool.features(x)
    mean_embed = sum(
        class_moment_loss(s[1], y, r[1], y)
        for s, r in zip(feats_s, feats_r, strict=True)
    ) / len(pool)
    torch.testing.assert_close(out["loss/dm_embed"], mean_embed)


def test_independent_transforms_reach_the_pool():
    gen, pool = _ClassImages(), _pool()
    x, y = _batch()
    z = gen.sample_noise(len(y), torch.Generator().manual_seed(0))
    task = _task(gen, pool)
    plain = task(x, y, z, y)
    flipped = task(x, y, z, y, (lambda t: t.flip(-1), lambda t: t))
    assert plain["loss/dm_embed"] != flipped["loss/dm_embed"]
    torch.testing.assert_close(plain["loss/g"], flipped["loss/g"])  # critic: as is


def _setup(seed=0):
    torch.manual_seed(seed)
    x, y = _batch(n=48, seed=seed)
    sampler = BatchSampler(x, y, CLASSES, "balanced")
    gen = _ClassImages()
    critic = Critic(SIDE, CLASSES, ndf=4, fc_hidden=8)
    pool = _pool(seed, size=2, width=8, reinit_every=4, lr=0.01)
    gan = GanModels(
        gen,
        critic,
        torch.optim.Adam(gen.parameters(), lr=0.01),
        torch.optim.Adam(critic.parameters(), lr=1e-4),
    )
    return DistributionMatchingTask(gen, pool, critic, lambda_g=0.0), gan, sampler


def _run(task, gan, sampler, steps, seed=0, augment=True):
    logs = []
    for i in range(steps):
        np_rng = np.random.default_rng([seed, i])
        torch_rng = torch.Generator().manual_seed(1000 * seed + i)
        logs.append(
            phase2_dm_step(task, gan, sampler, np_rng, torch_rng, 12, 1, 10.0, augment)
        )
    return logs


def test_dm_steps_reduce_the_moment_loss_on_a_fixed_batch():
    task, gan, sampler = _setup()
    start = copy.deepcopy(task.generator)
    logs = _run(task, gan, sampler, 18)
    assert {"loss/pool/ce", "loss/gen/dm_embed", "loss/critic", "w_dist"} <= set(
        logs[-1]
    )
    assert all(np.isfinite(v) for log in logs for v in log.values())
    # a held-out batch large enough that real-vs-real sampling noise is small,
    # judged by the pool as it ended, without augmentation
    x, y = _batch(n=150, seed=5)
    z = start.sample_noise(150, torch.Generator().manual_seed(9))
    with torch.no_grad():
        before = DistributionMatchingTask(start, task.pool, task.critic, 0.0)(
            x, y, z, y
        )
        after = task(x, y, z, y)
    for key in ("loss/dm_logits", "loss/dm_embed"):  # measured: 0.36 and 0.53
        assert after[key] < 0.8 * before[key], key


def test_dm_step_changes_the_pool_only_by_its_own_update():
    task, gan, sampler = _setup()
    twin = _pool(0, size=2, width=8, reinit_every=4, lr=0.01)
    twin.load_state_dict(task.pool.state_dict())
    for i in range(3):
        _run(task, gan, sampler, 1, seed=i)
        np_rng = np.random.default_rng([i, 0])  # the step's real batch, replayed
        real, labels = sampler.draw(np_rng, 12)
        twin.update(dihedral_augment(real, np_rng), labels)
        assert _same(_weights(task.pool), _weights(twin))
    # the generator's optimiser never holds a pool parameter
    pool_ids = {id(p) for p in task.pool.parameters()}
    assert pool_ids.isdisjoint(
        id(p) for g in gan.opt_g.param_groups for p in g["params"]
    )


def test_dm_steps_are_reproducible():
    a, b = _setup(), _setup()
    la, lb = _run(*a, 3), _run(*b, 3)
    assert la == lb
    assert torch.equal(a[0].generator.images, b[0].generator.images)


def test_attention_generator_trains_under_dm():
    from medsynth_fl.models.generator import AttentionGenerator

    torch.manual_seed(0)
    task, gan, sampler = _setup()
    gen = AttentionGenerator(SIDE, CLASSES, ngf=4, n_res_blocks=1)
    task.generator = gan.generator = gen
    gan.opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
    before = copy.deepcopy(gen.state_dict())
    logs = _run(task, gan, sampler, 2)
    assert all(np.isfinite(v) for log in logs for v in log.values())
    assert any(not torch.equal(before[k], v) for k, v in gen.state_dict().items())
