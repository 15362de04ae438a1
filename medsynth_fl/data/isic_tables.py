"""The CSV files of an official ISIC 2019 folder: ground truth, metadata, centres.

Centre/fold CSV discovery (FLamby style, columns ``image,label,center_id,center,
fold``): an explicitly given file wins; otherwise the first of
:data:`CENTER_CSV_NAMES` found directly in the ISIC root is used; otherwise
every image gets an empty centre and fold.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import DataFormatError, MissingPathError, format_ids

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
