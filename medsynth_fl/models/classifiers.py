"""Classifier architectures behind one interface: the teacher and the downstream model.

``ClassifierTrainConfig.arch`` picks a timm ViT (``vit``), the ConvNet of
dataset-distillation work (``convnet``) or a ResNet-18 adapted to small images
(``resnet18``). Every caller that trains, evaluates or embeds with a classifier
goes through :func:`classifier_logits` and :func:`classifier_embedding`, which
also accept a DDP wrapper.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet

from ..config import ClassifierTrainConfig
from .convnet import ConvNet
from .vit import build_vit, vit_embedding, vit_logits


def build_resnet18(num_classes: int) -> ResNet:
    """Torchvision's ResNet-18 with a 3×3 stride-1 stem and no max-pool.

    The ImageNet stem (7×7 stride 2, then a max-pool) would shrink a 32 px
    image to 8 px before the first block; CIFAR-style ResNets drop it.
    """
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def build_classifier(
    cfg: ClassifierTrainConfig, num_classes: int, image_size: int | None = None
) -> nn.Module:
    """Build the classifier ``cfg.arch`` names, randomly initialised (or pretrained).

    Parameters
    ----------
    cfg : the classifier's training config (``arch`` and its section).
    num_classes : outputs of the head.
    image_size : side of the training images; needed by ``convnet`` (its
        linear head depends on it), ignored by ``vit`` (inputs are resized to
        ``cfg.vit``'s size) and ``resnet18`` (global pooling).

    Returns
    -------
    nn.Module
        Logits for images in [-1, 1] through :func:`classifier_logits`.
    """
    if cfg.arch == "vit":
        return build_vit(cfg.vit, num_classes)
    if cfg.arch == "convnet":
        if image_size is None:
            raise ValueError("arch=convnet needs the image size of its training set")
        return ConvNet(num_classes, image_size, cfg.convnet.width, cfg.convnet.depth)
    if cfg.arch == "resnet18":
        return build_resnet18(num_classes)
    raise ValueError(f"unknown classifier arch {cfg.arch!r}")


def _core(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP keeps the model in .module


def classifier_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class logits ``[N, K]`` of any :func:`build_classifier` model.

    Calls the module itself (or :func:`~.vit.vit_logits`, which resizes to the
    ViT's input size), so that a DDP wrapper sees the forward pass.
    """
    if isinstance(_core(model), ConvNet | ResNet):
        return model(x)
    return vit_logits(model, x)


def _resnet_features(m: ResNet, x: torch.Tensor) -> torch.Tensor:
    # torchvision's ResNet._forward_impl up to the pooled features (before fc).
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return torch.flatten(m.avgpool(x), 1)


def classifier_embedding(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features ``[N, D]`` (pre-logits) of any classifier."""
    core = _core(model)
    if isinstance(core, ConvNet):
        return core.embed(x)
    if isinstance(core, ResNet):
        return _resnet_features(core, x)
    return vit_embedding(core, x)
