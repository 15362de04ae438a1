"""A batch source of fresh generator samples: downstream training without a fixed set.

Instead of sampling IPC images per class once, every step draws new (noise,
class) pairs from the sites' generators, so the downstream model never sees
the same synthetic image twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .batches import Batch


class GeneratorStream:
    """Draws class-balanced batches from several sites' generators.

    Parameters
    ----------
    generators : one ``(generator, holdings)`` per site. ``holdings`` names
        the classes the site's generator may draw, as indices into the shared
        label space: either a sequence (every holder of a class is drawn
        equally often) or a mapping from class index to the site's weight in
        that class, such as its training images of the class. A generator has
        ``sample_noise(n, torch_rng)`` and ``forward(z, y)``; one with
        ``has_label_head`` also has ``forward_parts(z, y)`` with ``"s"`` and
        ``"label_logits"``.
    num_classes : size of the shared label space.

    Every batch draws classes uniformly over the union of the classes present,
    then, per image, a site among those that hold its class, in proportion to
    its weight there (a site never generates a class it lacks). Weighting by
    image counts makes each class's stream what pooled, class-balanced real
    data would be: a site that saw 3 images of a class does not make half of it.
    """

    def __init__(
        self,
        generators: list[tuple[nn.Module, Sequence[int] | Mapping[int, float]]],
        num_classes: int,
    ):
        if not generators:
            raise ValueError("a generator stream needs at least one generator")
        self.generators = [g.eval() for g, _ in generators]
        self.num_classes = num_classes
        weights = [_holding_weights(h) for _, h in generators]
        self.classes = np.array(sorted({k for w in weights for k in w}))
        if len(self.classes) == 0:
            raise ValueError("no generator holds any class")
        if self.classes[0] < 0 or self.classes[-1] >= num_classes:
            raise ValueError(f"class indices must lie in 0..{num_classes - 1}")
        # holders[k]: the sites that hold class k; share[k]: how often each is drawn
        self.holders: dict[int, np.ndarray] = {}
        self.share: dict[int, np.ndarray] = {}
        for k in self.classes.tolist():
            sites = [i for i, w in enumerate(weights) if k in w]
            w = np.array([weights[i][k] for i in sites], dtype=np.float64)
            self.holders[k], self.share[k] = np.array(sites), w / w.sum()
        # soft targets for every image once any site has a label head
        self.soft = any(getattr(g, "has_label_head", False) for g in self.generators)

    def choose(
        self, np_rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Classes and sites of ``n`` samples (uniform class, then weighted holder)."""
        labels = np_rng.choice(self.classes, size=n)
        sites = np.empty(n, dtype=np.int64)
        for k in np.unique(labels).tolist():
            at = np.flatnonzero(labels == k)
            sites[at] = np_rng.choice(self.holders[k], size=len(at), p=self.share[k])
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


def _holding_weights(holdings: Sequence[int] | Mapping[int, float]) -> dict[int, float]:
    """Class index -> positive weight (1 for each class of a plain sequence)."""
    if isinstance(holdings, Mapping):
        weights = {int(k): float(w) for k, w in holdings.items()}
    else:
        weights = {int(k): 1.0 for k in holdings}
    if any(not w > 0 for w in weights.values()):
        raise ValueError("a site's weight in a class it holds must be positive")
    return weights
