"""Name → builder registry for generators, so a manifest can name its architecture."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from ..config import CriticConfig, GeneratorConfig
from .critic import Critic
from .generator import AttentionGenerator

GENERATORS: dict[str, Callable[..., nn.Module]] = {"attention": AttentionGenerator}


def generator_kwargs(
    cfg: GeneratorConfig, image_size: int, num_classes: int
) -> dict[str, Any]:
    """Constructor keyword arguments of the generator: its architecture config."""
    return {
        "image_size": image_size,
        "num_classes": num_classes,
        "ngf": cfg.ngf,
        "n_res_blocks": cfg.n_res_blocks,
        "use_mask": cfg.use_mask,
        "canvas_downsample": cfg.canvas_downsample,
        "embed_dim": cfg.embed_dim,
        "spectral_norm": cfg.spectral_norm,
    }


def build_generator(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build a registered generator; an unknown name is an error."""
    if arch not in GENERATORS:
        raise ValueError(
            f"unknown generator architecture {arch!r}; known: {list(GENERATORS)}"
        )
    return GENERATORS[arch](**kwargs)


def build_critic(cfg: CriticConfig, image_size: int, num_classes: int) -> Critic:
    """Build the site's critic F_a from its config section."""
    return Critic(
        image_size=image_size,
        num_classes=num_classes,
        ndf=cfg.ndf,
        fc_hidden=cfg.fc_hidden,
        spectral_norm=cfg.spectral_norm,
    )
