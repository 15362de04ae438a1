import pytest
import torch
from torch import nn

from medsynth_fl.models.critic import Critic


def test_nine_convolutions_two_fully_connected_layers():
    c = Critic(32, 4, ndf=4, fc_hidden=8)
    assert sum(isinstance(m, nn.Conv2d) for m in c.modules()) == 9
    assert sum(isinstance(m, nn.Linear) for m in c.modules()) == 2
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in c.modules())


@pytest.mark.parametrize("size", [16, 64])
def test_scores_one_per_image_and_every_parameter_learns(size):
    c = Critic(size, 3, ndf=4, fc_hidden=8)
    scores = c(torch.randn(4, 3, size, size), torch.tensor([0, 1, 2, 0]))
    assert scores.shape == (4,)
    scores.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in c.parameters())


def test_projection_makes_the_score_class_dependent():
    c = Critic(16, 3, ndf=4, fc_hidden=8)
    x = torch.randn(1, 3, 16, 16)
    assert not torch.allclose(c(x, torch.tensor([0])), c(x, torch.tensor([1])))


def test_rejects_size_not_multiple_of_16():
    with pytest.raises(ValueError):
        Critic(24, 3)


def test_a_fresh_critic_has_an_input_gradient_near_one():
    """Regression: with PyTorch's default init the input gradient was ~6e-5, so
    the gradient penalty sat at its maximum and phase I learnt nothing."""
    torch.manual_seed(0)
    critic = Critic(64, 3, ndf=16, fc_hidden=64)
    x = torch.randn(8, 3, 64, 64, requires_grad=True)
    (grad,) = torch.autograd.grad(critic(x, torch.zeros(8, dtype=torch.long)).sum(), x)
    assert 0.2 < grad.flatten(1).norm(dim=1).mean() < 5
