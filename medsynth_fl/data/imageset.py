"""The one in-memory representation of a labelled image collection."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

# Optional per-image metadata columns carried alongside the pixels.
META_COLUMNS = ("image_ids", "center", "lesion_id", "fold")
SOFT_LABELS = "soft_labels"  # the npz key of the optional soft labels


@dataclass(frozen=True)
class ImageSet:
    """Images (uint8, N×H×W×3, RGB) with integer labels into ``class_names``.

    Real data, condensed sets and site partitions all use this type, so every
    reader, split and trainer speaks one format. Metadata arrays are optional
    and, when present, have one entry per image. ``soft_labels`` (float32
    N×K, rows summing to 1) are optional class probabilities per image, e.g.
    a generator's label head's view of its own sample.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    soft_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(f"images must be N×H×W×3, got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {self.images.dtype}")
        if self.labels.shape != (len(self.images),):
            raise ValueError("labels must have one entry per image")
        if len(self.labels) and (
            self.labels.min() < 0 or self.labels.max() >= len(self.class_names)
        ):
            raise ValueError("a label is outside class_names")
        for key, values in self.meta.items():
            if len(values) != len(self.images):
                raise ValueError(f"meta column {key!r} has the wrong length")
        if self.soft_labels is not None:
            check_soft_labels(self.soft_labels, len(self.images), len(self.class_names))

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        """Side of the (square) images in pixels."""
        return int(self.images.shape[1])

    def class_counts(self) -> np.ndarray:
        """Number of images of each class, in ``class_names`` order."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def subset(self, index: np.ndarray) -> ImageSet:
        """Return the images at ``index`` (a boolean mask or integer indices)."""
        return ImageSet(
            self.images[index],
            self.labels[index],
            self.class_names,
            {k: v[index] for k, v in self.meta.items()},
            None if self.soft_labels is None else self.soft_labels[index],
        )

    @staticmethod
    def concat(parts: list[ImageSet]) -> ImageSet:
        """Join image sets with the same class names.

        Metadata is kept where all have it; soft labels where any has them
        (one-hot rows for the parts without).
        """
        if not parts:
            raise ValueError("nothing to concatenate")
        names = parts[0].class_names
        if any(p.class_names != names for p in parts):
            raise ValueError("cannot concatenate image sets with different class names")
        keys = set.intersection(*(set(p.meta) for p in parts))
        return ImageSet(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.labels for p in parts]),
            names,
            {k: np.concatenate([p.meta[k] for p in parts]) for k in sorted(keys)},
            _concat_soft(parts),
        )

    def to_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float N×3×H×W in [-1, 1] and labels as int64."""
        x = torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        return x, torch.from_numpy(self.labels.astype(np.int64))

    def save_npz(self, path: str | Path) -> Path:
        """Write images, labels, class names and metadata to an ``.npz`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            images=self.images,
            labels=self.labels.astype(np.int64),
            class_names=np.array(self.class_names),
            **{k: np.asarray(v) for k, v in self.meta.items()},
            **({} if self.soft_labels is None else {SOFT_LABELS: self.soft_labels}),
        )
        return path


def check_soft_labels(soft: np.ndarray, n: int, k: int) -> None:
    """Raise ValueError unless ``soft`` is float32 ``n``×``k`` probability rows."""
    if soft.dtype != np.float32 or soft.shape != (n, k):
        raise ValueError(
            f"soft_labels must be float32 {n}×{k}, got {soft.dtype} {soft.shape}"
        )
    if n and (
        not np.isfinite(soft).all()
        or soft.min() < 0
        or not np.allclose(soft.sum(axis=1), 1.0, atol=1e-4)
    ):
        raise ValueError("soft_labels rows must be probabilities that sum to 1")


def _concat_soft(parts: list[ImageSet]) -> np.ndarray | None:
    if all(p.soft_labels is None for p in parts):
        return None
    k = len(parts[0].class_names)
    eye = np.eye(k, dtype=np.float32)
    return np.concatenate(
        [p.soft_labels if p.soft_labels is not None else eye[p.labels] for p in parts]
    )


def images_from_tensor(x: torch.Tensor) -> np.ndarray:
    """Convert float N×3×H×W images in [-1, 1] back to uint8 N×H×W×3."""
    x = x.detach().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
