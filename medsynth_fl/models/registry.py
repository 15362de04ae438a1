"""Name → builder registry for generators, so a manifest can name its architecture."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..config import CriticConfig, GeneratorConfig
from .cgan import ConditionalResNetGenerator, ProjectionCritic
from .critic import Critic
from .generator import AttentionGenerator

GENERATORS: dict[str, Callable[..., nn.Module]] = {
    "attention": AttentionGenerator,
    "cbn_resnet": ConditionalResNetGenerator,
}
CRITICS: dict[str, Callable[..., nn.Module]] = {
    "paper9": Critic,
    "projection_resnet": ProjectionCritic,
}


# A manifest names its generator's size; a hostile one could ask for a
# billion blocks (a hang) before any weight is compared. Every integer
# argument a registered generator takes is bounded here, generously.
GENERATOR_INT_LIMITS: dict[str, tuple[int, int]] = {
    "image_size": (8, 1024),
    "num_classes": (1, 1000),
    "ngf": (1, 1024),
    "n_res_blocks": (0, 64),
    "canvas_downsample": (1, 64),
    "embed_dim": (1, 4096),
    "z_dim": (1, 4096),
}


def generator_kwargs(
    cfg: GeneratorConfig, image_size: int, num_classes: int
) -> dict[str, Any]:
    """Constructor keyword arguments of the generator: its architecture config."""
    common = {"image_size": image_size, "num_classes": num_classes, "ngf": cfg.ngf}
    if cfg.arch == "cbn_resnet":
        return {
            **common,
            "z_dim": cfg.z_dim,
            "attention": cfg.attention,
            "label_head": cfg.label_head,
        }
    return {
        **common,
        "n_res_blocks": cfg.n_res_blocks,
        "use_mask": cfg.use_mask,
        "canvas_downsample": cfg.canvas_downsample,
        "embed_dim": cfg.embed_dim,
        "spectral_norm": cfg.spectral_norm,
    }


def build_generator(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """Build a registered generator; an unknown name or an unbounded size is refused."""
    if arch not in GENERATORS:
        raise ValueError(
            f"unknown generator architecture {arch!r}; known: {list(GENERATORS)}"
        )
    for name, (low, high) in GENERATOR_INT_LIMITS.items():
        value = kwargs.get(name)
        if value is None:
            continue
        if type(value) is not int:
            raise ValueError(f"{name} must be an integer, got {str(value)[:40]}")
        if not low <= value <= high:
            raise ValueError(f"{name}={str(value)[:40]} is outside [{low}, {high}]")
    return GENERATORS[arch](**kwargs)


def critic_kwargs(
    cfg: CriticConfig, image_size: int, num_classes: int
) -> dict[str, Any]:
    """Constructor keyword arguments of the critic (``arch`` names its class)."""
    common = {
        "arch": cfg.arch,
        "image_size": image_size,
        "num_classes": num_classes,
        "ndf": cfg.ndf,
    }
    if cfg.arch == "projection_resnet":
        return common
    return {**common, "fc_hidden": cfg.fc_hidden, "spectral_norm": cfg.spectral_norm}


def _critic_from_kwargs(kwargs: dict[str, Any]) -> nn.Module:
    kwargs = dict(kwargs)
    arch = kwargs.pop("arch", "paper9")  # files written before the ResNet critic
    if arch not in CRITICS:
        raise ValueError(
            f"unknown critic architecture {arch!r}; known: {list(CRITICS)}"
        )
    return CRITICS[arch](**kwargs)


def build_critic(cfg: CriticConfig, image_size: int, num_classes: int) -> nn.Module:
    """Build the site's critic F_a from its config section."""
    return _critic_from_kwargs(critic_kwargs(cfg, image_size, num_classes))


def save_critic(critic: nn.Module, kwargs: dict[str, Any], path: Path) -> Path:
    """Write the critic's weights with its constructor kwargs (site-local file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in critic.state_dict().items()}
    save_file(state, path, metadata={"critic_kwargs": json.dumps(kwargs)})
    return path


def load_critic(path: Path) -> nn.Module:
    """Rebuild a critic written by :func:`save_critic` (no unpickling)."""
    if not path.is_file():
        raise FileNotFoundError(f"critic checkpoint not found: {path}")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        if "critic_kwargs" not in meta:
            raise ValueError(
                f"{path} is not a critic written by medsynth-fl (no critic_kwargs)"
            )
        critic = _critic_from_kwargs(json.loads(meta["critic_kwargs"]))
        critic.load_state_dict({k: f.get_tensor(k) for k in f.keys()})
    return critic.eval()
