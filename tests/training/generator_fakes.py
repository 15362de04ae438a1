"""A tiny stand-in for a site generator: its images tell their class and site."""

from __future__ import annotations

import torch
from torch import nn


class FakeGenerator(nn.Module):
    """``sample_noise`` / ``forward_parts`` like the real generators, in microseconds.

    Channel 0 of every image holds the class (``y / num_classes``), channel 1
    the site tag; ``calls`` records each call's labels, training flag and
    whether gradients were on. With ``label_head`` it also returns
    ``label_logits`` that put most mass on ``(y + 1) % K``, so soft targets are
    told apart from the hard labels.
    """

    def __init__(
        self, site: int, num_classes: int, size: int = 8, label_head: bool = False
    ):
        super().__init__()
        self.site, self.num_classes, self.size = site, num_classes, size
        self.has_label_head = label_head
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: list[tuple[list[int], bool, bool]] = []

    def sample_noise(self, n: int, generator: torch.Generator | None = None):
        return torch.randn(n, 2, generator=generator)

    def forward_parts(self, z: torch.Tensor, y: torch.Tensor) -> dict:
        self.calls.append((y.tolist(), self.training, torch.is_grad_enabled()))
        n = len(y)
        x = torch.zeros(n, 3, self.size, self.size)
        x[:, 0] = (y.float() / self.num_classes)[:, None, None]
        x[:, 1] = self.site / 10
        x[:, 2] = 0.1 * torch.tanh(z[:, :1, None]) * self.scale
        parts = {"s": x}
        if self.has_label_head:
            parts["label_logits"] = (
                3.0
                * nn.functional.one_hot(
                    (y + 1) % self.num_classes, self.num_classes
                ).float()
            )
        return parts

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.forward_parts(z, y)["s"]
