"""The tables behind the images: ISIC 2019 CSVs and row selection.

The official folder's CSV files (ground truth, metadata, centres) are read
and checked here. Every reader then selects its rows the same way: classes
matched by name, centres, empty classes.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import (
    DataFormatError,
    EmptyClassError,
    MissingPathError,
    OnEmptyClass,
    UnknownCenterError,
    UnknownLabelError,
    format_ids,
)

log = logging.getLogger(__name__)

GROUND_TRUTH_CSV = "ISIC_2019_Training_GroundTruth.csv"
METADATA_CSV = "ISIC_2019_Training_Metadata.csv"
CENTER_CSV_NAMES = ("isic2019_flamby_centers.csv",)


def read_csv_rows(
    path: Path, required: Sequence[str]
) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV with a header into dicts, checking the required columns.

    Parameters
    ----------
    path
        The CSV file.
    required
        Column names that must be in the header.

    Returns
    -------
    tuple
        The header, and one ``{column: value}`` per data row.

    Raises
    ------
    MissingPathError
        If the file does not exist.
    DataFormatError
        If a required column is absent.
    """
    if not path.is_file():
        raise MissingPathError(f"CSV file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DataFormatError(
                f"{path} lacks column(s) {missing} (header: {header}); "
                "use the official ISIC / FLamby column names"
            )
        return list(header), list(reader)


def read_ground_truth(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read the one-hot ISIC ground truth (``image,MEL,NV,...,UNK``; 0.0/1.0).

    Parameters
    ----------
    path
        ``ISIC_2019_Training_GroundTruth.csv``.

    Returns
    -------
    tuple
        Image ids, class columns (header order, ``image`` excluded), and int64
        labels indexing those columns.

    Raises
    ------
    DataFormatError
        If a value is not a number or a row is not exactly one-hot.
    """
    header, rows = read_csv_rows(path, ["image"])
    columns = [c for c in header if c != "image"]
    ids = [r["image"] for r in rows]
    try:
        onehot = np.array([[float(r[c]) for c in columns] for r in rows], dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataFormatError(f"{path}: a class value is not a number ({exc})") from exc
    onehot = onehot.reshape(len(rows), len(columns))
    valid = np.isin(onehot, (0.0, 1.0)).all(axis=1) & (onehot.sum(axis=1) == 1)
    bad = [i for i, ok in zip(ids, valid, strict=True) if not ok]
    if bad:
        raise DataFormatError(
            f"{path}: row(s) of {format_ids(bad)} are not one-hot (exactly one 1.0); "
            "fix the ground-truth file"
        )
    return ids, columns, onehot.argmax(axis=1).astype(np.int64)


def read_lesion_ids(path: Path, ids: Sequence[str]) -> np.ndarray:
    """Return the ``lesion_id`` of each of ``ids`` from the ISIC metadata CSV.

    Parameters
    ----------
    path
        ``ISIC_2019_Training_Metadata.csv`` (columns include ``image``, ``lesion_id``).
    ids
        Image ids, in the order wanted.

    Returns
    -------
    np.ndarray
        Unicode array; empty string where the id or its lesion id is absent.
    """
    _, rows = read_csv_rows(path, ["image", "lesion_id"])
    lesion = {r["image"]: r["lesion_id"] or "" for r in rows}
    return np.array([lesion.get(i, "") for i in ids], dtype=str)


def find_centers_csv(root: Path, explicit: str | Path | None) -> Path | None:
    """Locate the FLamby-style centre/fold CSV (see the module docstring).

    Parameters
    ----------
    root
        The ISIC root folder.
    explicit
        A file the caller named; it must exist.

    Returns
    -------
    Path or None
        The CSV to use, or None when there is none.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise MissingPathError(f"centre CSV not found: {path}")
        return path
    for name in CENTER_CSV_NAMES:
        if (root / name).is_file():
            return root / name
    return None


def read_centers(
    path: Path | None, ids: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Return the centre name and FLamby fold of each of ``ids``.

    Parameters
    ----------
    path
        The centre CSV (columns ``image``, ``center``, ``fold``), or None.
    ids
        Image ids, in the order wanted.

    Returns
    -------
    tuple of np.ndarray
        ``center`` and ``fold`` (unicode), empty strings where unknown.
    """
    if path is None:
        log.info("no centre CSV found: centre and fold left empty")
        return np.full(len(ids), "", dtype="<U1"), np.full(len(ids), "", dtype="<U1")
    _, rows = read_csv_rows(path, ["image", "center", "fold"])
    by_id = {r["image"]: (r["center"] or "", r["fold"] or "") for r in rows}
    known = sum(i in by_id for i in ids)
    log.info("centres from %s: %d of %d images listed", path, known, len(ids))
    pairs = [by_id.get(i, ("", "")) for i in ids]
    center = np.array([p[0] for p in pairs], dtype=str)
    fold = np.array([p[1] for p in pairs], dtype=str)
    return center, fold


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
