"""Latent-recovery attack (seed 004 eq. 1): known answers, invertible generator."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medsynth_fl.data.imageset import images_from_tensor
from medsynth_fl.models.cgan import ConditionalResNetGenerator
from medsynth_fl.privacy.attacks import recovery
from medsynth_fl.privacy.features import RandomConvFeatures
from medsynth_fl.privacy.metrics import evaluate_attack
from medsynth_fl.privacy.signals import recovery_errors

from .fakes import UpsampleGenerator, image_set, uniform_images

PHIS = {"pixel": nn.Identity(), "feature": RandomConvFeatures(width=8, seed=0)}


class ExactInverse(nn.Module):
    """E(x) = atanh(block mean): inverts UpsampleGenerator on its range."""

    def forward(self, x):
        return torch.atanh(F.avg_pool2d(x, 4).clamp(-0.999, 0.999))


def generated_images(g, n, seed):
    """uint8 samples of ``g`` (as a site stores its images)."""
    z = g.sample_noise(n, torch.Generator().manual_seed(seed))
    return images_from_tensor(g(z, torch.zeros(n, dtype=torch.long)))


def recovery_result(g, encoder, phi, members, nonmembers):
    score = lambda imgs: recovery.membership_scores(  # noqa: E731
        recovery_errors(g, encoder, phi, *image_set(imgs).to_tensors())
    )
    return evaluate_attack("recovery", score(members), score(nonmembers))


def test_recovery_error_is_zero_for_images_the_generator_can_draw():
    g = UpsampleGenerator()
    x = g(
        g.sample_noise(4, torch.Generator().manual_seed(0)),
        torch.zeros(4, dtype=torch.long),
    )

    errors = recovery_errors(
        g, ExactInverse(), nn.Identity(), x, torch.zeros(4, dtype=torch.long)
    )

    assert errors.shape == (4,) and errors.max() < 1e-4


@pytest.fixture(scope="module", params=list(PHIS))
def trained(request):
    """(generator, encoder trained on generated samples only, φ)."""
    g, phi = UpsampleGenerator(), PHIS[request.param]
    encoder = recovery.train_recovery_encoder(
        g, phi, labels=[0], steps=60, batch_size=32, lr=3e-3, seed=0
    )
    return g, encoder, phi


def test_training_reduces_the_recovery_error_on_generated_samples(trained):
    g, encoder, phi = trained
    x = (
        torch.from_numpy(generated_images(g, 64, 5)).permute(0, 3, 1, 2).float() / 127.5
        - 1
    )
    y = torch.zeros(64, dtype=torch.long)
    untrained = recovery.LatentEncoder(**recovery.encoder_kwargs(16, g.noise_shape))

    after = recovery_errors(g, encoder, phi, x, y).mean()

    assert after < 0.3 * recovery_errors(g, untrained, phi, x, y).mean()
    assert not encoder.training


def test_an_encoder_trained_under_bf16_autocast_learns_as_well():
    g = UpsampleGenerator()
    x = (
        torch.from_numpy(generated_images(g, 64, 5)).permute(0, 3, 1, 2).float() / 127.5
        - 1
    )
    y = torch.zeros(64, dtype=torch.long)
    untrained = recovery.LatentEncoder(**recovery.encoder_kwargs(16, g.noise_shape))
    encoder = recovery.train_recovery_encoder(
        g,
        nn.Identity(),
        [0],
        steps=60,
        batch_size=32,
        lr=3e-3,
        seed=0,
        precision="bf16",
    )

    after = recovery_errors(g, encoder, nn.Identity(), x, y).mean()

    assert after < 0.3 * recovery_errors(g, untrained, nn.Identity(), x, y).mean()
    assert next(encoder.parameters()).dtype == torch.float32  # weights stay fp32


def test_recovery_attack_finds_images_the_generator_reproduces(trained):
    g, encoder, phi = trained
    reproduced = generated_images(g, 100, 1)
    others = uniform_images(np.random.default_rng(1), 100, 0, 256)

    assert recovery_result(g, encoder, phi, reproduced, others).auc > 0.99
    assert recovery_result(g, encoder, phi, others, reproduced).auc < 0.01


def test_recovery_attack_is_at_chance_on_identical_distributions(trained):
    g, encoder, phi = trained
    images = generated_images(g, 1000, 2)

    r = recovery_result(g, encoder, phi, images[:500], images[500:])

    assert abs(r.auc - 0.5) < 0.05 and abs(r.acc - 0.5) < 0.06


def test_encoder_training_leaves_the_generator_untouched():
    g = UpsampleGenerator().train()
    g.dummy.requires_grad_(True)

    recovery.train_recovery_encoder(
        g, nn.Identity(), [0], steps=2, batch_size=4, lr=1e-3, seed=0
    )

    assert g.training and g.dummy.requires_grad and g.dummy.item() == 0.0


def test_encoder_reads_a_flat_latent_for_the_conditional_gan():
    g = ConditionalResNetGenerator(num_classes=3, image_size=16, z_dim=12, ngf=4)

    encoder = recovery.train_recovery_encoder(
        g, nn.Identity(), [0, 2], steps=2, batch_size=4, lr=1e-3, seed=0
    )

    assert encoder(torch.zeros(5, 3, 16, 16)).shape == (5, 12)


def test_encoder_rejects_a_noise_shape_it_cannot_produce():
    with pytest.raises(ValueError, match="noise_shape"):
        recovery.LatentEncoder(16, (8, 4))
