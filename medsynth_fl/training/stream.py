"""A batch source of fresh generator samples: downstream training without a fixed set.

Instead of sampling IPC images per class once, every step draws new (noise,
class) pairs from the sites' generators, so the downstream model never sees
the same synthetic image twice.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .batches import Batch


class GeneratorStream:
    """Draws class-balanced batches from several sites' generators.

    Parameters
    ----------
    generators : one ``(generator, class indices it holds)`` per site (the
        indices of its manifest's ``classes_present`` in the shared label
        space). A generator has ``sample_noise(n, torch_rng)`` and
        ``forward(z, y)``; one with ``has_label_head`` also has
        ``forward_parts(z, y)`` with ``"s"`` and ``"label_logits"``.
    num_classes : size of the shared label space.

    Every batch draws classes uniformly over the union of the classes present,
    then, per image, a site uniformly among those that hold its class (a
    site never generates a class it lacks).
    """

    def __init__(self, generators: list[tuple[nn.Module, list[int]]], num_classes: int):
        if not generators:
            raise ValueError("a generator stream needs at least one generator")
        self.generators = [g.eval() for g, _ in generators]
        self.num_classes = num_classes
        self.classes = np.array(sorted({int(c) for _, cs in generators for c in cs}))
        if len(self.classes) == 0:
            raise ValueError("no generator holds any class")
        if self.classes[0] < 0 or self.classes[-1] >= num_classes:
            raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
        # holders[k]: the sites that hold class k
        self.holders = {
            int(k): np.array([i for i, (_, cs) in enumerate(generators) if k in cs])
            for k in self.classes
        }
        # soft targets for every image once any site has a label head
        self.soft = any(getattr(g, "has_label_head", False) for g in self.generators)

    def choose(
        self, np_rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Classes and sites of ``n`` samples (uniform class, then uniform holder)."""
        labels = np_rng.choice(self.classes, size=n)
        sites = np.array(
            [
                self.holders[int(k)][np_rng.integers(len(self.holders[int(k)]))]
                for k in labels
            ],
            dtype=np.int64,
        )
        return labels.astype(np.int64), sites

    @torch.no_grad()
    def draw(
        self, np_rng: np.random.Generator, n: int, torch_rng: torch.Generator
    ) -> Batch:
        """``n`` fresh images in [-1, 1], their labels, and soft targets or None.

        One generator call per site. Sites without a label head get one-hot
        rows when others have one.
        """
        labels, sites = self.choose(np_rng, n)
        images: torch.Tensor | None = None
        soft = torch.zeros(n, self.num_classes) if self.soft else None
        for i, g in enumerate(self.generators):
            idx = np.flatnonzero(sites == i)
            if len(idx) == 0:
                continue
            g.eval()  # spectral norm's power iteration must not move
            device = next(g.parameters()).device
            y = torch.from_numpy(labels[idx]).to(device)
            z = g.sample_noise(len(idx), torch_rng)
            if getattr(g, "has_label_head", False):
                parts = g.forward_parts(z, y)
                x, probs = parts["s"], torch.softmax(parts["label_logits"], dim=1)
            else:
                x, probs = g(z, y), None
            if images is None:
                images = torch.empty(n, *x.shape[1:], device=x.device)
            images[torch.from_numpy(idx).to(images.device)] = x.clamp(-1, 1).to(
                images.device
            )
            if soft is not None:
                rows = torch.from_numpy(idx)
                soft[rows] = (
                    probs.float().cpu()
                    if probs is not None
                    else nn.functional.one_hot(y.cpu(), self.num_classes).float()
                )
        return images, torch.from_numpy(labels), soft
