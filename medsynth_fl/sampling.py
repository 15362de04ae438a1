"""Drawing condensed sets from a generator: noise and a class label, nothing else."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data.imageset import ImageSet, images_from_tensor


@torch.no_grad()
def sample_condensed_set(
    generator: nn.Module,
    class_names: list[str],
    classes: list[str],
    ipc: int,
    seed: int = 0,
    batch_size: int = 64,
) -> ImageSet:
    """Sample ``ipc`` images for each of ``classes`` (deterministic given ``seed``).

    Parameters
    ----------
    generator : a generator with ``sample_noise`` and ``forward(z, y)``; one
        with ``has_label_head`` also gives ``forward_parts(z, y)["label_logits"]``.
    class_names : the generator's full label space.
    classes : the classes to sample (e.g. the package's ``classes_present``).
    ipc : images per class.

    Returns
    -------
    ImageSet
        ``ipc`` images per class, in ``classes`` order; with ``soft_labels``
        (the softmax of the label head) when the generator has a label head.
    """
    unknown = sorted(set(classes) - set(class_names))
    if unknown:
        raise ValueError(f"classes {unknown} are not in the generator's label space")
    if ipc < 1:
        raise ValueError("ipc must be at least 1")
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    labels = torch.tensor([class_names.index(c) for c in classes for _ in range(ipc)])
    device = next(generator.parameters()).device
    with_head = getattr(generator, "has_label_head", False)
    chunks, soft = [], []
    for batch in labels.split(batch_size):
        z = generator.sample_noise(len(batch), rng)
        if with_head:
            parts = generator.forward_parts(z, batch.to(device))
            chunks.append(images_from_tensor(parts["s"]))
            soft.append(soft_targets(parts["label_logits"]))
        else:
            chunks.append(images_from_tensor(generator(z, batch.to(device))))
    return ImageSet(
        np.concatenate(chunks),
        labels.numpy().astype(np.int64),
        tuple(class_names),
        soft_labels=np.concatenate(soft) if with_head else None,
    )


def soft_targets(label_logits: torch.Tensor) -> np.ndarray:
    """Probability rows (float32, summing to 1) from a label head's logits."""
    p = torch.softmax(label_logits.detach().double(), dim=1)  # float64: exact sums
    return p.float().cpu().numpy()


def save_class_grids(images: ImageSet, out_dir: Path, columns: int = 10) -> list[Path]:
    """Write one PNG grid per class present in ``images``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(images.class_names):
        batch = images.images[images.labels == k]
        if len(batch) == 0:
            continue
        rows = -(-len(batch) // columns)
        h, w = batch.shape[1:3]
        grid = np.zeros((rows * (h + 2), columns * (w + 2), 3), np.uint8)
        for i, img in enumerate(batch):
            r, c = divmod(i, columns)
            grid[
                r * (h + 2) + 1 : r * (h + 2) + 1 + h,
                c * (w + 2) + 1 : c * (w + 2) + 1 + w,
            ] = img
        path = out_dir / f"grid_{k}_{name}.png"
        Image.fromarray(grid).save(path)
        paths.append(path)
    return paths
