"""Drawing training batches from an in-memory image set, with class re-weighting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np
import torch

if TYPE_CHECKING:
    from ..data.imageset import ImageSet

ClassSampling = Literal["natural", "sqrt", "balanced"]


def class_weights(
    labels: np.ndarray,
    num_classes: int,
    mode: ClassSampling,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Per-image sampling probabilities.

    ``natural`` draws images uniformly; ``balanced`` gives every present class
    the same mass; ``sqrt`` gives a class mass ∝ sqrt(count), a compromise that
    shows rare classes more often without replaying their few images as often as
    ``balanced`` does (which would favour memorisation).

    ``groups`` (e.g. lesion ids, one per image) spreads each class's mass
    evenly over its groups, then over a group's images: a lesion photographed
    k times is drawn as often as a lesion photographed once, not k times as
    often. An empty or missing id counts as a group of its own.
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    if mode == "natural":
        per_class = np.ones(num_classes)
    elif mode == "sqrt":
        per_class = 1.0 / np.sqrt(np.maximum(counts, 1))
    else:
        per_class = 1.0 / np.maximum(counts, 1)
    w = per_class[labels]
    if groups is not None:
        w = w * _group_share(labels, groups)
    return w / w.sum()


def _group_share(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per-image factor that gives every (class, group) the mass of one image.

    Within a class of n images in g groups, an image of a group of k images
    gets n / (g·k): the class keeps its total mass, each group gets an equal share.
    """
    if len(groups) != len(labels):
        raise ValueError("groups must have one entry per image")
    ids = np.array(
        [
            f"{label}/{group}" if group not in (None, "") else f"{label}/#{i}"
            for i, (label, group) in enumerate(
                zip(labels.tolist(), groups.tolist(), strict=True)
            )
        ]
    )
    _, inverse, per_group = np.unique(ids, return_inverse=True, return_counts=True)
    groups_in_class = np.bincount(
        labels[np.unique(inverse, return_index=True)[1]], minlength=labels.max() + 1
    )
    images_in_class = np.bincount(labels, minlength=labels.max() + 1)
    return images_in_class[labels] / (groups_in_class[labels] * per_group[inverse])


class BatchSampler:
    """Draws batches of (image, label) tensors from tensors held in memory."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        num_classes: int,
        mode: ClassSampling = "natural",
        groups: np.ndarray | None = None,
    ):
        if len(images) == 0:
            raise ValueError("cannot draw batches from an empty image set")
        self.images = images
        self.labels = labels
        self.p = class_weights(labels.numpy(), num_classes, mode, groups)

    def draw(
        self, rng: np.random.Generator, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of ``n`` images drawn with replacement under the class weights."""
        idx = torch.from_numpy(rng.choice(len(self.p), size=n, p=self.p))
        return self.images[idx], self.labels[idx]


Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # images, labels, soft


class BatchSource(Protocol):
    """Anything a classifier trains from: real images, a condensed set, generators."""

    def draw(
        self, np_rng: np.random.Generator, n: int, torch_rng: torch.Generator
    ) -> Batch:
        """``n`` images ``[n, 3, H, W]`` in [-1, 1], labels, soft targets or None."""
        ...


class ImageSetSource:
    """Batches of an in-memory :class:`ImageSet`, with its soft labels when it has them.

    Draws the same indices as :class:`BatchSampler` (same weights, same RNG
    calls), so training on an image set replays as it did before soft targets.
    """

    def __init__(
        self,
        images: ImageSet,
        mode: ClassSampling = "natural",
        groups: np.ndarray | None = None,
    ):
        x, y = images.to_tensors()
        self.sampler = BatchSampler(x, y, len(images.class_names), mode, groups)
        soft = images.soft_labels
        self.soft = None if soft is None else torch.from_numpy(soft)

    def draw(
        self, np_rng: np.random.Generator, n: int, torch_rng: torch.Generator
    ) -> Batch:
        """``n`` images drawn with replacement under the class weights."""
        idx = torch.from_numpy(
            np_rng.choice(len(self.sampler.p), size=n, p=self.sampler.p)
        )
        soft = None if self.soft is None else self.soft[idx]
        return self.sampler.images[idx], self.sampler.labels[idx], soft


def dihedral(x: torch.Tensor, flip: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Flip (where ``flip``) then rotate by ``turns`` quarter turns, per image.

    Batched and differentiable in ``x``; ``flip`` is ``[N]`` bool, ``turns``
    ``[N]`` int in 0..3.
    """
    flip, turns = flip.to(x.device), turns.to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    out = x.clone()
    for k in range(1, 4):
        idx = (turns == k).nonzero().squeeze(1)
        out[idx] = torch.rot90(x[idx], k, dims=(-2, -1))
    return out


def dihedral_augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random flip and 90° rotation per image.

    Dermoscopy has no canonical orientation.
    """
    flips = rng.integers(0, 2, size=len(x))
    rots = rng.integers(0, 4, size=len(x))
    return dihedral(x, torch.from_numpy(flips).bool(), torch.from_numpy(rots))
