"""The three classifier architectures behind one interface, at 16 and 32 px."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from medsynth_fl.config import ClassifierTrainConfig, ConvNetConfig, ViTConfig
from medsynth_fl.models.classifiers import (
    build_classifier,
    classifier_embedding,
    classifier_logits,
)

VIT = ViTConfig(
    model="vit_tiny_patch16_224",
    img_size=16,
    patch_size=4,
    embed_dim=32,
    depth=2,
    num_heads=2,
    adaptation="full",
)
CFG = {
    "vit": ClassifierTrainConfig(arch="vit", vit=VIT),
    "convnet": ClassifierTrainConfig(
        arch="convnet", convnet=ConvNetConfig(width=8, depth=2)
    ),
    "resnet18": ClassifierTrainConfig(arch="resnet18"),
}
EMBED = {"vit": 32, "convnet": None, "resnet18": 512}


@pytest.mark.parametrize("size", [16, 32])
@pytest.mark.parametrize("arch", sorted(CFG))
def test_logits_and_embeddings_have_the_right_shape(arch, size):
    torch.manual_seed(0)
    model = build_classifier(CFG[arch], num_classes=5, image_size=size).eval()
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        logits, emb = classifier_logits(model, x), classifier_embedding(model, x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    # the ConvNet's embedding keeps (size / 2**depth)² positions of 8 channels
    width = EMBED[arch] or 8 * (size // 4) ** 2
    assert emb.shape == (2, width)


def test_resnet_is_adapted_to_small_images():
    model = build_classifier(CFG["resnet18"], num_classes=3)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)


@pytest.mark.parametrize("arch", ["convnet", "resnet18"])
def test_saved_weights_reload_into_the_same_arch(arch, tmp_path):
    source = build_classifier(CFG[arch], num_classes=4, image_size=16)
    save_file(
        {k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "m"
    )
    loaded = build_classifier(CFG[arch], num_classes=4, image_size=16)
    loaded.load_state_dict(load_file(tmp_path / "m"), strict=True)
    x = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(
        classifier_logits(source.eval(), x), classifier_logits(loaded.eval(), x)
    )


def test_convnet_needs_the_image_size():
    with pytest.raises(ValueError, match="image size"):
        build_classifier(CFG["convnet"], num_classes=3)
