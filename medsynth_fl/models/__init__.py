"""Models: the attention generator, its critic, and the timm ViT (+LoRA)."""

from .critic import Critic
from .generator import AttentionGenerator, count_parameters
from .registry import build_critic, build_generator, generator_kwargs
from .vit import build_vit, trainable_parameters, vit_embedding, vit_logits

__all__ = [
    "AttentionGenerator",
    "Critic",
    "build_critic",
    "build_generator",
    "build_vit",
    "count_parameters",
    "generator_kwargs",
    "trainable_parameters",
    "vit_embedding",
    "vit_logits",
]
