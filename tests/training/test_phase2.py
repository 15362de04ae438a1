import pytest
import torch
from torch import nn

from medsynth_fl.training.paired_augment import PairTransform
from medsynth_fl.training.phase2_logit_matching import LogitMatchingTask


def _identity(n: int) -> PairTransform:
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    ones = torch.ones(n, 1, 1, 1)
    return PairTransform(
        flip=torch.zeros(n, dtype=torch.bool),
        quarter_turns=torch.zeros(n, dtype=torch.long),
        theta=theta,
        brightness=torch.zeros(n, 1, 1, 1),
        saturation=ones,
        contrast=ones,
    )


def test_identity_parameters_leave_images_unchanged():
    x = torch.rand(4, 3, 8, 8) * 2 - 1
    torch.testing.assert_close(_identity(4)(x), x)


def test_flip_and_quarter_turn_match_torch_per_pair():
    x = torch.rand(2, 3, 8, 8)
    t = _identity(2)
    t = PairTransform(
        torch.tensor([True, False]),
        torch.tensor([0, 3]),
        t.theta,
        t.brightness,
        t.saturation,
        t.contrast,
    )
    out = t(x)
    torch.testing.assert_close(out[0], x[0].flip(-1))
    torch.testing.assert_close(out[1], torch.rot90(x[1], 3, dims=(-2, -1)))


def test_both_members_of_a_pair_get_the_same_transform():
    rng = torch.Generator().manual_seed(3)
    t = PairTransform.draw(64, rng)
    real = torch.rand(64, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(t(real), t(real.clone()))
    # ...and different pairs get different ones
    assert len(set(t.quarter_turns.tolist())) > 1
    assert t.brightness.std() > 0


def test_draw_is_reproducible_from_the_step_generator():
    a = PairTransform.draw(8, torch.Generator().manual_seed(0))
    b = PairTransform.draw(8, torch.Generator().manual_seed(0))
    x = torch.rand(8, 3, 16, 16)
    torch.testing.assert_close(a(x), b(x))


def test_transform_is_differentiable_in_the_synthetic_image():
    x = (torch.rand(8, 3, 16, 16) * 2 - 1).requires_grad_(True)
    PairTransform.draw(8, torch.Generator().manual_seed(1))(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_batch_size_mismatch_is_refused():
    with pytest.raises(ValueError, match="pairs"):
        PairTransform.draw(4, torch.Generator().manual_seed(0))(torch.zeros(3, 3, 8, 8))


class _RecordingTeacher(nn.Module):
    """Linear logits over pixels; records what it was shown."""

    def __init__(self, side: int, classes: int = 3):
        super().__init__()
        self.patch_embed = type("P", (), {"img_size": (side, side)})()
        self.head = nn.Linear(3 * side * side, classes)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.head(x.flatten(1))


class _CopyGenerator(nn.Module):
    """Returns its noise as the image, so a test can make synthetic == real."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, z, y):
        return z * self.w


class _MeanCritic(nn.Module):
    def forward(self, x, y):
        return x.flatten(1).mean(1)


@pytest.mark.parametrize("augment", [False, True])
def test_logit_loss_is_zero_when_synthetic_equals_real(augment):
    real = torch.rand(6, 3, 8, 8) * 2 - 1
    teacher = _RecordingTeacher(8)
    task = LogitMatchingTask(_CopyGenerator(), teacher, _MeanCritic(), lambda_g=0.0)
    t = PairTransform.draw(6, torch.Generator().manual_seed(2)) if augment else None
    out = task(real, torch.zeros(6, dtype=torch.long), real.clone(), t)
    assert out["loss/n"].item() == pytest.approx(0.0, abs=1e-10)
    expected = t(real) if augment else real
    for seen in teacher.seen:  # the teacher sees both batches transformed alike
        torch.testing.assert_close(seen, expected)


def test_logit_loss_pulls_a_shifted_pair_together():
    real = torch.rand(6, 3, 8, 8) * 2 - 1
    teacher = _RecordingTeacher(8)
    gen = _CopyGenerator()
    task = LogitMatchingTask(gen, teacher, _MeanCritic(), lambda_g=0.0)
    t = PairTransform.draw(6, torch.Generator().manual_seed(2))
    out = task(real, torch.zeros(6, dtype=torch.long), 0.5 * real, t)
    assert out["loss/n"].item() > 0
    out["loss"].backward()
    assert gen.w.grad.item() < 0  # descent raises w towards 1: synthetic → real
