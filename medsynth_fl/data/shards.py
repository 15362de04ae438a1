"""Reader for the packed ISIC shards (``isic_64_part*.npz``, ``isic_128jpg_part*.npz``).

Size rule: ``image_size <= 64`` reads the 64 px uint8 arrays (Lanczos-resized
down when smaller); ``65..128`` decodes the 128 px JPEGs (resized down when
smaller than 128). Larger sizes are refused with :class:`ImageSizeError`: the
shards hold no more detail, and upsampling would only fake resolution (use the
``isic_raw`` reader on original JPEGs instead).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import ISIC_CLASSES
from ._imaging import decode_packed, fit_size, handle_corrupt
from ._npzio import read_npz
from ._select import check_empty_classes, select_rows
from .errors import (
    DataFormatError,
    ImageSizeError,
    MissingPathError,
    OnCorrupt,
    OnEmptyClass,
)
from .imageset import META_COLUMNS, ImageSet

log = logging.getLogger(__name__)

ARRAY_GLOB = "isic_64_part*.npz"
JPEG_GLOB = "isic_128jpg_part*.npz"
ARRAY_SIZE = 64
JPEG_SIZE = 128
META_KEYS = ("labels", "image_ids", "center", "fold", "lesion_id")


def _check_part(
    part: dict[str, np.ndarray], path: Path, extra: Sequence[str] = ()
) -> None:
    """Raise if the columns of one part disagree in length or dtype."""
    n = len(part["labels"])
    for key in (*META_KEYS, *extra):
        if part[key].shape != (n,):
            raise DataFormatError(
                f"{path}: {key!r} has shape {part[key].shape}, not ({n},)"
            )
    if not np.issubdtype(part["labels"].dtype, np.integer):
        raise DataFormatError(f"{path}: 'labels' must be integers")
    if "images" in part:
        if part["images"].dtype != np.uint8 or part["images"].shape[0] != n:
            raise DataFormatError(f"{path}: 'images' must be uint8 with {n} rows")
    else:
        off = part["offsets"]
        if off.shape != (n + 1,) or off[0] != 0 or np.any(np.diff(off) < 0):
            raise DataFormatError(f"{path}: 'offsets' must be {n + 1} rising values")
        if off[-1] != len(part["jpeg"]):
            raise DataFormatError(f"{path}: 'offsets' do not end at len('jpeg')")


def _concat_parts(
    parts: list[dict[str, np.ndarray]], paths: list[Path], extra: Sequence[str]
) -> dict[str, np.ndarray]:
    """Join the parts' columns; packed JPEG offsets are shifted to one buffer."""
    names = parts[0]["class_names"]
    for part, path in zip(parts, paths, strict=True):
        if not np.array_equal(part["class_names"], names):
            raise DataFormatError(
                f"{path}: class_names {part['class_names'].tolist()} differ from "
                f"{paths[0]}'s {names.tolist()}; all parts must share one class list"
            )
    table = {k: np.concatenate([p[k] for p in parts]) for k in (*META_KEYS, *extra)}
    table["class_names"] = names
    if "images" in parts[0]:
        table["images"] = np.concatenate([p["images"] for p in parts])
    else:
        starts = np.cumsum([0] + [len(p["jpeg"]) for p in parts[:-1]])
        table["jpeg"] = np.concatenate([p["jpeg"] for p in parts])
        table["offsets"] = np.concatenate(
            [p["offsets"][:-1] + s for p, s in zip(parts, starts, strict=True)]
            + [np.array([len(table["jpeg"])], dtype=np.int64)]
        )
    return table


def read_shard_table(
    folder: str | Path, pattern: str = ARRAY_GLOB, extra: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """Read and join every shard part matching ``pattern`` in ``folder``.

    Parameters
    ----------
    folder
        Folder holding the parts.
    pattern
        :data:`ARRAY_GLOB` (64 px ``images``) or :data:`JPEG_GLOB`
        (128 px ``jpeg`` + ``offsets``).
    extra
        Further per-image columns to read and join (e.g. ``center_id``).

    Returns
    -------
    dict of str to np.ndarray
        ``class_names``, the :data:`META_KEYS` columns, and ``images`` or
        ``jpeg`` + ``offsets`` (offsets into the joined buffer).

    Raises
    ------
    MissingPathError
        If the folder does not exist or holds no matching part.
    DataFormatError
        If a part lacks keys or its columns are inconsistent.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingPathError(f"shard folder not found: {folder}; check data.path")
    paths = sorted(folder.glob(pattern))
    if not paths:
        raise MissingPathError(
            f"no shard files matching {pattern!r} in {folder}; point data.path at "
            "the folder holding the isic_*_part*.npz files"
        )
    pixels = ("images",) if pattern == ARRAY_GLOB else ("jpeg", "offsets")
    parts = []
    for path in paths:
        part = read_npz(path, required=(*pixels, "class_names", *META_KEYS, *extra))
        _check_part(part, path, extra)
        parts.append(part)
    log.info("read %d shard part(s) matching %s from %s", len(paths), pattern, folder)
    return _concat_parts(parts, paths, extra)


def _pixels(
    table: dict, rows: np.ndarray, on_corrupt: OnCorrupt, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """Gather (and decode) the pixels of ``rows``; return images and a kept mask."""
    if "images" in table:
        return table["images"][rows], np.ones(len(rows), dtype=bool)
    decoded = decode_packed(table["jpeg"], table["offsets"], rows)
    ok = np.array([d is not None for d in decoded], dtype=bool)
    handle_corrupt(table["image_ids"][rows][~ok].tolist(), on_corrupt, where)
    good = [d for d in decoded if d is not None]
    if not good:
        return np.zeros((0, JPEG_SIZE, JPEG_SIZE, 3), np.uint8), ok
    shapes = {g.shape for g in good}
    if len(shapes) > 1:
        raise DataFormatError(f"{where}: JPEGs decode to several sizes {shapes}")
    return np.stack(good), ok


def read_shards(
    folder: str | Path,
    *,
    image_size: int = ARRAY_SIZE,
    classes: Sequence[str] = tuple(ISIC_CLASSES),
    centers: Sequence[str] | None = None,
    on_corrupt: OnCorrupt = "skip",
    empty_class: OnEmptyClass = "error",
) -> ImageSet:
    """Load the packed ISIC shards of ``folder`` as an :class:`ImageSet`.

    Parameters
    ----------
    folder
        Folder with ``isic_64_part*.npz`` and/or ``isic_128jpg_part*.npz``.
    image_size
        Output side in pixels, at most 128 (see the module docstring).
    classes
        Class names to keep, in label order; matched to the shards by name.
    centers
        Centres to keep; None keeps all.
    on_corrupt
        ``"skip"`` (warn with the count and ids) or ``"error"`` for JPEG bytes
        that cannot be decoded.
    empty_class
        ``"error"`` or ``"skip"`` when a class has no image.

    Returns
    -------
    ImageSet
        Images with meta ``image_ids``, ``center``, ``lesion_id``, ``fold``.
    """
    if image_size > JPEG_SIZE:
        raise ImageSizeError(
            f"the shards hold at most {JPEG_SIZE} px images, data.image_size is "
            f"{image_size}; lower it or use data.source=isic_raw on the originals"
        )
    pattern = ARRAY_GLOB if image_size <= ARRAY_SIZE else JPEG_GLOB
    table = read_shard_table(folder, pattern)
    return table_to_imageset(
        table,
        f"shards in {folder}",
        image_size=image_size,
        classes=classes,
        centers=centers,
        on_corrupt=on_corrupt,
        empty_class=empty_class,
    )


def table_to_imageset(
    table: dict[str, np.ndarray],
    source: str,
    *,
    image_size: int,
    classes: Sequence[str],
    centers: Sequence[str] | None,
    on_corrupt: OnCorrupt,
    empty_class: OnEmptyClass,
) -> ImageSet:
    """Select, decode and resize the rows of a shard-layout table.

    Parameters
    ----------
    table
        Columns as returned by :func:`read_shard_table` (``images`` or
        ``jpeg`` + ``offsets``, ``class_names`` and :data:`META_KEYS`).
    source
        Where the table came from, for messages.
    image_size, classes, centers, on_corrupt, empty_class
        As in :func:`read_shards`.

    Returns
    -------
    ImageSet
        The selected images, resized down to ``image_size``.
    """
    names = [str(c) for c in table["class_names"]]
    rows, labels = select_rows(
        table["labels"], table["center"], names, classes, centers, source
    )
    images, ok = _pixels(table, rows, on_corrupt, source)
    rows, labels = rows[ok], labels[ok]
    check_empty_classes(labels, classes, empty_class, source)
    meta = {k: table[k][rows].astype(str) for k in META_COLUMNS}
    return ImageSet(fit_size(images, image_size, source), labels, tuple(classes), meta)
