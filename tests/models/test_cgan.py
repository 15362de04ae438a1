import pytest
import torch

from medsynth_fl.models.cgan import ConditionalResNetGenerator, ProjectionCritic
from medsynth_fl.models.registry import CRITICS, GENERATORS
from medsynth_fl.training.phase1_wgan import critic_loss, generator_loss


def tiny(**kw):
    args = dict(image_size=16, num_classes=3, z_dim=8, ngf=4)
    args.update(kw)
    return ConditionalResNetGenerator(**args)


def test_shapes_range_and_label_head():
    g = tiny().eval()  # train mode moves spectral norm's power iteration per call
    z, y = g.sample_noise(5), torch.tensor([0, 1, 2, 0, 1])
    parts = g.forward_parts(z, y)
    assert z.shape == (5, 8) and g.noise_shape == (8,)
    assert parts["s"].shape == (5, 3, 16, 16) and parts["s"].abs().max() <= 1
    assert parts["label_logits"].shape == (5, 3)
    torch.testing.assert_close(parts["s"], g(z, y))
    assert "label_logits" not in tiny(label_head=False).forward_parts(z, y)


def test_label_changes_the_image_at_every_stage():
    # Conditional BN: the same z with another label gives another image, and
    # every up block has its own per-class scale and shift.
    g = tiny()
    with torch.no_grad():
        for block in g.blocks:
            block.bn1.shift.weight.normal_(0, 1)
    g.eval()
    z = g.sample_noise(4, torch.Generator().manual_seed(0))
    a = g(z, torch.zeros(4, dtype=torch.long))
    b = g(z, torch.ones(4, dtype=torch.long))
    assert (a - b).abs().mean() > 1e-3
    assert all(hasattr(b, "bn1") and b.bn1.scale.num_embeddings == 3 for b in g.blocks)


def test_label_head_does_not_move_the_images():
    g = tiny()
    parts = g.forward_parts(g.sample_noise(4), torch.tensor([0, 1, 2, 0]))
    parts["label_logits"].sum().backward()
    assert g.to_rgb.parametrizations.weight.original.grad is None
    assert g.label_head[-1].weight.grad is not None


def test_sampling_is_deterministic_in_eval_mode():
    g = tiny()
    labels = torch.tensor([0, 1, 2])
    a = g.sample(labels, torch.Generator().manual_seed(3))
    b = g.sample(labels, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert g.training  # restored


@pytest.mark.parametrize("size", [16, 32])
def test_projection_critic_uses_the_label(size):
    d = ProjectionCritic(size, 3, ndf=4)
    with torch.no_grad():
        d.embed.parametrizations.weight.original.normal_(0, 1)
    x = torch.rand(2, 3, size, size) * 2 - 1
    s0 = d(x, torch.tensor([0, 0]))
    s1 = d(x, torch.tensor([1, 1]))
    assert s0.shape == (2,) and not torch.allclose(s0, s1)


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1 - real) = [0, 0.5]; relu(1 + fake) = [0, 1]
    assert critic_loss(real, fake, "hinge").item() == pytest.approx(0.25 + 0.5)
    assert generator_loss(fake, "hinge").item() == pytest.approx(1.0)


def test_registry_names():
    assert GENERATORS["cbn_resnet"] is ConditionalResNetGenerator
    assert CRITICS["projection_resnet"] is ProjectionCritic
    with pytest.raises(ValueError):
        tiny(image_size=24)
