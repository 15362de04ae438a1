"""Reader for an :class:`ImageSet` saved with :meth:`ImageSet.save_npz`.

The file is opened without pickle; keys, dtypes and shapes are validated before
an :class:`ImageSet` is built. Images larger than ``image_size`` are resized
down; smaller ones are refused (we do not upsample).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import ISIC_CLASSES
from ._imaging import fit_size
from ._npzio import npz_keys, read_npz
from ._select import check_empty_classes, select_rows
from .errors import DataFormatError, OnEmptyClass
from .imageset import META_COLUMNS, SOFT_LABELS, ImageSet

REQUIRED = ("images", "labels", "class_names")


def _validate(arrays: dict[str, np.ndarray], path: Path) -> None:
    """Raise :class:`DataFormatError` unless the arrays form a valid ImageSet."""
    images, labels, names = (arrays[k] for k in REQUIRED)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataFormatError(
            f"{path}: 'images' must be uint8 N×H×W×3, got {images.dtype} {images.shape}"
        )
    if images.shape[1] != images.shape[2]:
        raise DataFormatError(f"{path}: images must be square, got {images.shape}")
    n = len(images)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(
            f"{path}: 'labels' must be {n} integers, got {labels.dtype} {labels.shape}"
        )
    if names.ndim != 1 or names.dtype.kind != "U" or len(names) == 0:
        raise DataFormatError(f"{path}: 'class_names' must be a 1-D string array")
    if n and (labels.min() < 0 or labels.max() >= len(names)):
        raise DataFormatError(f"{path}: a label is outside 0..{len(names) - 1}")
    soft = arrays.get(SOFT_LABELS)
    if soft is not None and (soft.dtype != np.float32 or soft.shape != (n, len(names))):
        raise DataFormatError(
            f"{path}: {SOFT_LABELS!r} must be float32 {n}×{len(names)}, got "
            f"{soft.dtype} {soft.shape}"
        )
    for key, values in arrays.items():
        if key in REQUIRED or key == SOFT_LABELS:
            continue
        if values.shape != (n,) or (key in META_COLUMNS and values.dtype.kind != "U"):
            kind = "strings" if key in META_COLUMNS else "values"
            raise DataFormatError(
                f"{path}: meta column {key!r} must be {n} {kind}, got "
                f"{values.dtype} {values.shape}"
            )


def load_npz(
    path: str | Path,
    *,
    image_size: int | None = None,
    classes: Sequence[str] = tuple(ISIC_CLASSES),
    centers: Sequence[str] | None = None,
    empty_class: OnEmptyClass = "error",
) -> ImageSet:
    """Load an ``.npz`` written by :meth:`ImageSet.save_npz`.

    Parameters
    ----------
    path
        The ``.npz`` file.
    image_size
        Output side; None keeps the stored size. Must not exceed it.
    classes
        Class names to keep, in label order; matched to the stored names.
    centers
        Centres to keep (needs a ``center`` column); None keeps all.
    empty_class
        ``"error"`` or ``"skip"`` when a class has no image.

    Returns
    -------
    ImageSet
        The stored images and meta columns; absent :data:`META_COLUMNS` are
        filled with empty strings.

    Raises
    ------
    DataFormatError
        If keys, dtypes or shapes are wrong, or the file needs pickle.
    """
    path = Path(path)
    optional = (
        [k for k in npz_keys(path) if k not in REQUIRED] if path.is_file() else []
    )
    arrays = read_npz(path, REQUIRED, optional)
    _validate(arrays, path)
    n = len(arrays["labels"])
    soft = arrays.pop(SOFT_LABELS, None)
    meta = {k: v for k, v in arrays.items() if k not in REQUIRED}
    for key in META_COLUMNS:
        meta.setdefault(key, np.full(n, "", dtype="<U1"))
    names = [str(c) for c in arrays["class_names"]]
    source = f"image set {path}"
    rows, labels = select_rows(
        arrays["labels"], meta["center"], names, classes, centers, source
    )
    check_empty_classes(labels, classes, empty_class, source)
    images = arrays["images"][rows]
    size = images.shape[1] if image_size is None else image_size
    return ImageSet(
        fit_size(images, size, source),
        labels,
        tuple(classes),
        {k: v[rows] for k, v in meta.items()},
        None if soft is None else _select_soft(soft[rows], names, classes),
    )


def _select_soft(
    soft: np.ndarray, names: Sequence[str], classes: Sequence[str]
) -> np.ndarray:
    """Soft-label columns of ``classes`` (stored order ``names``), renormalised.

    Mass on classes left out is dropped; a row left with none falls back to
    uniform over the kept classes (rows are kept by their hard label, which
    the soft label almost always favours).
    """
    kept = soft[:, [list(names).index(c) for c in classes]].astype(np.float64)
    total = kept.sum(axis=1, keepdims=True)
    out = np.where(total > 0, kept / np.where(total > 0, total, 1), 1 / len(classes))
    return out.astype(np.float32)
