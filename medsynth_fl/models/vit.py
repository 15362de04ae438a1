"""timm Vision Transformer with LoRA from peft: the teacher and the downstream model.

Our code calls only timm's model contract: ``forward_features`` then
``forward_head(pre_logits=...)``. Pre-logits embed images for the distance
audits; logits drive phase II logit matching and classification.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import timm
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from ..config import ViTConfig

log = logging.getLogger(__name__)


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained ViT weights were requested but cannot be loaded."""


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in {"", "0"}:
        return False
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _timm_kwargs(cfg: ViTConfig, num_classes: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    for name in ("img_size", "patch_size", "embed_dim", "depth", "num_heads"):
        value = getattr(cfg, name)
        if value is not None:
            kwargs[name] = value
    return kwargs


def create_backbone(cfg: ViTConfig, num_classes: int) -> nn.Module:
    """Create the timm ViT, with pretrained weights when configured.

    ``cfg.pretrained`` is a local checkpoint path (loaded through timm's
    ``pretrained_cfg_overlay``), ``"hub"`` (Hugging Face Hub, online users), or
    None (random initialisation). Offline, ``"hub"`` fails at once with a clear
    message instead of timm's minute of retries.
    """
    kwargs = _timm_kwargs(cfg, num_classes)
    if cfg.pretrained is None:
        return timm.create_model(cfg.model, pretrained=False, **kwargs)
    if cfg.pretrained == "hub":
        if not _hub_reachable():
            raise PretrainedWeightsUnavailable(
                f"pretrained weights for {cfg.model} come from the Hugging Face Hub, "
                "which is unreachable (or HF_HUB_OFFLINE is set); set "
                "vit.pretrained to a local checkpoint file instead"
            )
        return timm.create_model(cfg.model, pretrained=True, **kwargs)
    path = Path(cfg.pretrained).expanduser()
    if not path.is_file():
        raise PretrainedWeightsUnavailable(f"pretrained checkpoint not found: {path}")
    return timm.create_model(
        cfg.model,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(path)},
        **kwargs,
    )


def apply_adaptation(model: nn.Module, cfg: ViTConfig) -> nn.Module:
    """Wrap ``model`` with LoRA on the attention ``qkv`` projections, or leave it.

    With ``adaptation="lora"`` only the LoRA matrices and the classification
    head train (seed 000 §3.2); with ``"full"`` every parameter trains, which is
    what a randomly initialised backbone needs (see ``docs/decisions.md``).
    """
    if cfg.adaptation == "full":
        return model
    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=["qkv"],
        modules_to_save=["head"],
    )
    return get_peft_model(model, lora)


def build_vit(cfg: ViTConfig, num_classes: int) -> nn.Module:
    """Build the configured ViT classifier (backbone + adaptation).

    Images of any size are resized to the ViT's input size when it runs.
    """
    return apply_adaptation(create_backbone(cfg, num_classes), cfg)


def _fit_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # Images are in [-1, 1], which is timm's mean=std=0.5 normalisation for ViTs.
    core = getattr(model, "module", model)  # a DDP wrapper keeps the ViT in .module
    size = core.patch_embed.img_size[0]
    if x.shape[-1] == size:
        return x
    return nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)


def vit_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Class logits (input resized to the ViT's size).

    Calls the module itself (timm's ``forward`` is ``forward_head(forward_features)``)
    so that a DDP wrapper sees the forward pass and synchronises gradients.
    """
    return model(_fit_input(model, x))


def vit_embedding(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pre-logit embedding through timm's contract (for embedding-distance audits)."""
    features = model.forward_features(_fit_input(model, x))
    return model.forward_head(features, pre_logits=True)


def trainable_parameters(model: nn.Module) -> int:
    """Number of parameters that receive gradients."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
