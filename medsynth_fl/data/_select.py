"""Row selection shared by the readers: classes by name, centres, empty classes.

Readers call :func:`select_rows` on the metadata *before* decoding any pixels,
so images of unwanted classes or centres are never decoded, and
:func:`check_empty_classes` on the final labels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .errors import (
    EmptyClassError,
    OnEmptyClass,
    UnknownCenterError,
    UnknownLabelError,
)

log = logging.getLogger(__name__)


def map_classes(
    labels: np.ndarray,
    source_classes: Sequence[str],
    classes: Sequence[str],
    source: str,
) -> np.ndarray:
    """Re-index labels from the source's class list to the configured one, by name.

    Parameters
    ----------
    labels
        Integer labels indexing ``source_classes``.
    source_classes
        Class names of the source (ground-truth columns, shard ``class_names``).
    classes
        Configured class names, in the order the labels should follow.
    source
        Name of the source for messages.

    Returns
    -------
    np.ndarray
        int64 labels indexing ``classes``; ``-1`` where the source class is not
        configured (those rows are to be dropped).

    Raises
    ------
    UnknownLabelError
        If a configured class is not among ``source_classes``.
    """
    unknown = [c for c in classes if c not in source_classes]
    if unknown:
        raise UnknownLabelError(
            f"class(es) {unknown} of data.classes are not provided by {source}, "
            f"which has {list(source_classes)}; fix data.classes"
        )
    lookup = np.full(len(source_classes), -1, dtype=np.int64)
    for new, name in enumerate(classes):
        lookup[list(source_classes).index(name)] = new
    return lookup[np.asarray(labels, dtype=np.int64)]


def center_mask(
    center: np.ndarray, centers: Sequence[str] | None, source: str
) -> np.ndarray:
    """Return a boolean mask of the rows whose centre is in ``centers``.

    Parameters
    ----------
    center
        Centre name of every row (empty string where unknown).
    centers
        Centres to keep; None keeps every row.
    source
        Name of the source for messages.

    Returns
    -------
    np.ndarray
        Boolean mask, one entry per row.

    Raises
    ------
    UnknownCenterError
        If a configured centre does not occur in ``center``.
    """
    if centers is None:
        return np.ones(len(center), dtype=bool)
    known = sorted({str(c) for c in center if str(c)})
    unknown = [c for c in centers if c not in known]
    if unknown:
        hint = (
            f"known centres: {known}"
            if known
            else "it has no centre information (for ISIC folders, add a centre CSV)"
        )
        raise UnknownCenterError(
            f"centre(s) {unknown} of data.centers do not occur in {source}; "
            f"{hint}; fix data.centers or set it to null"
        )
    return np.isin(center, list(centers))


def select_rows(
    labels: np.ndarray,
    center: np.ndarray,
    source_classes: Sequence[str],
    classes: Sequence[str],
    centers: Sequence[str] | None,
    source: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Choose the rows to load and their labels in the configured class list.

    Parameters
    ----------
    labels
        Integer labels indexing ``source_classes``, one per row.
    center
        Centre name per row.
    source_classes, classes, centers, source
        See :func:`map_classes` and :func:`center_mask`.

    Returns
    -------
    tuple of np.ndarray
        Integer row positions to keep, and their labels indexing ``classes``.
    """
    mapped = map_classes(labels, source_classes, classes, source)
    dropped = mapped < 0
    if dropped.any():
        names = np.asarray(source_classes)[np.asarray(labels)[dropped]]
        found, counts = np.unique(names, return_counts=True)
        log.info(
            "%s: dropped %d image(s) of classes not in data.classes (%s)",
            source,
            int(dropped.sum()),
            ", ".join(f"{n}: {c}" for n, c in zip(found, counts, strict=True)),
        )
    keep = ~dropped & center_mask(center, centers, source)
    rows = np.flatnonzero(keep)
    return rows, mapped[rows]


def check_empty_classes(
    labels: np.ndarray, classes: Sequence[str], empty_class: OnEmptyClass, source: str
) -> None:
    """Raise or warn when a configured class ends up with no image.

    With ``empty_class="skip"`` the class stays in ``class_names`` (so label
    indices stay aligned across sites) and simply has no images.

    Parameters
    ----------
    labels
        Final labels indexing ``classes``.
    classes
        Configured class names.
    empty_class
        ``"error"`` raises; ``"skip"`` logs a warning.
    source
        Name of the source for messages.

    Raises
    ------
    EmptyClassError
        If a class has no image and ``empty_class == "error"``.
    """
    if empty_class not in ("error", "skip"):
        raise ValueError(f"empty_class must be 'error' or 'skip', got {empty_class!r}")
    counts = np.bincount(labels, minlength=len(classes))
    empty = [c for c, n in zip(classes, counts, strict=True) if n == 0]
    if not empty:
        return
    if empty_class == "error":
        raise EmptyClassError(
            f"class(es) {empty} have no images in {source} (after the centre and "
            "class selection); remove them from data.classes, choose other "
            "data.centers, or set data.empty_class=skip"
        )
    log.warning("%s: class(es) %s have no images (kept, empty)", source, empty)
