"""Models: generators, critics and classifiers (timm ViT, ConvNet, ResNet-18)."""

from .classifiers import build_classifier, classifier_embedding, classifier_logits
from .critic import Critic
from .generator import AttentionGenerator
from .registry import build_critic, build_generator, generator_kwargs
from .vit import build_vit, trainable_parameters, vit_embedding, vit_logits

__all__ = [
    "AttentionGenerator",
    "Critic",
    "build_classifier",
    "build_critic",
    "build_generator",
    "build_vit",
    "classifier_embedding",
    "classifier_logits",
    "generator_kwargs",
    "trainable_parameters",
    "vit_embedding",
    "vit_logits",
]
