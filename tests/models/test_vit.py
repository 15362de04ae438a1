import pytest
import torch

from medsynth_fl.config import ViTConfig
from medsynth_fl.models.vit import (
    PretrainedWeightsUnavailable,
    build_vit,
    trainable_parameters,
    vit_embedding,
    vit_logits,
)

SMALL = dict(
    model="vit_tiny_patch16_224",
    img_size=16,
    patch_size=4,
    embed_dim=32,
    depth=2,
    num_heads=2,
)


def test_lora_trains_only_adapters_and_head():
    cfg = ViTConfig(**SMALL, adaptation="lora", lora_rank=4)
    model = build_vit(cfg, num_classes=5)
    # Per block, LoRA on qkv adds A (r×d) and B (3d×r); the head is d×5 + 5.
    d, r, depth = 32, 4, 2
    expected = depth * (r * d + 3 * d * r) + (d * 5 + 5)
    assert trainable_parameters(model) == expected
    logits = vit_logits(model, torch.randn(3, 3, 16, 16))
    logits.sum().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name  # the frozen base receives nothing


def test_full_adaptation_trains_everything():
    model = build_vit(ViTConfig(**SMALL, adaptation="full"), num_classes=3)
    assert trainable_parameters(model) == sum(p.numel() for p in model.parameters())


def test_timm_contract_logits_and_embedding_with_resize():
    model = build_vit(ViTConfig(**SMALL, adaptation="full"), num_classes=3)
    x = torch.randn(2, 3, 32, 32)  # resized to the ViT's 16 px
    assert vit_logits(model, x).shape == (2, 3)
    assert vit_embedding(model, x).shape == (2, 32)


def test_hub_weights_offline_fail_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsUnavailable, match="local checkpoint"):
        build_vit(ViTConfig(**SMALL, pretrained="hub"), num_classes=3)


def test_local_checkpoint_is_loaded(tmp_path):
    from safetensors.torch import save_file

    source = build_vit(ViTConfig(**SMALL, adaptation="full"), num_classes=3)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    loaded = build_vit(
        ViTConfig(**SMALL, adaptation="full", pretrained=str(path)), num_classes=3
    )
    torch.testing.assert_close(
        loaded.state_dict()["blocks.0.attn.qkv.weight"],
        source.state_dict()["blocks.0.attn.qkv.weight"],
    )


def test_missing_local_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(PretrainedWeightsUnavailable, match="not found"):
        build_vit(
            ViTConfig(**SMALL, pretrained=str(tmp_path / "nope.pth")), num_classes=3
        )
