"""Reader for the official ISIC 2019 training folder layout.

Expected under ``root``::

    ISIC_2019_Training_Input/<image>.jpg
    ISIC_2019_Training_GroundTruth.csv      image,MEL,NV,...,UNK (one-hot 0.0/1.0)
    ISIC_2019_Training_Metadata.csv         optional; gives lesion_id
    isic2019_flamby_centers.csv             optional; image,label,center_id,center,fold

The centre CSV can also be passed explicitly (see :mod:`.tables`). Each
image is centre-cropped to a square and Lanczos-resized; large JPEGs are first
DCT-downscaled while decoding (``Image.draft``) to no less than twice the target
size. Decoded arrays are cached in ``cache_dir`` under a key made of the file
list (names, sizes, mtimes), the image size and :data:`READER_VERSION`, so a
second load decodes no JPEG.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..config import ISIC_CLASSES
from .errors import (
    MissingImageError,
    MissingPathError,
    OnCorrupt,
    OnEmptyClass,
    format_ids,
)
from .imageset import ImageSet
from .tables import (
    GROUND_TRUTH_CSV,
    METADATA_CSV,
    check_empty_classes,
    find_centers_csv,
    read_centers,
    read_ground_truth,
    read_lesion_ids,
    select_rows,
)
from .transforms import DECODE_ERRORS, handle_corrupt, square_resize

log = logging.getLogger(__name__)

INPUT_DIR = "ISIC_2019_Training_Input"
READER_VERSION = "isic_raw-1"


def _decode_file(path: Path, size: int) -> np.ndarray | None:
    """Decode one image file to ``size``², or None if it is corrupt."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (2 * size, 2 * size))
            image.load()
            return square_resize(image, size)
    except DECODE_ERRORS:
        return None


def _decode_all(files: Sequence[Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``files`` on a few threads; return good images and the ok mask."""
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        decoded = list(pool.map(lambda f: _decode_file(f, size), files))
    ok = np.array([d is not None for d in decoded], dtype=bool)
    good = [d for d in decoded if d is not None]
    images = np.stack(good) if good else np.zeros((0, size, size, 3), np.uint8)
    log.info("decoded %d JPEG file(s) (%d corrupt)", len(files), int((~ok).sum()))
    return images, ok


def decode_cached(
    files: Sequence[Path], size: int, cache_dir: str | Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``files`` to ``size`` px, through the on-disk cache when given.

    Parameters
    ----------
    files
        Image files in load order.
    size
        Output side in pixels.
    cache_dir
        Folder for the cache; None disables caching.

    Returns
    -------
    tuple of np.ndarray
        Images of the decodable files and the boolean ``ok`` mask over ``files``.
    """
    if cache_dir is None:
        return _decode_all(files, size)
    key = cache_key(files, size, READER_VERSION)
    path = Path(cache_dir) / f"isic_raw_{size}px_{key}.npz"
    cached = load_cached(path, len(files), size)
    if cached is not None:
        return cached
    images, ok = _decode_all(files, size)
    save_cached(path, images, ok)
    return images, ok


def _check_layout(root: Path) -> Path:
    """Return the image folder, raising if the ISIC layout is incomplete."""
    if not root.is_dir():
        raise MissingPathError(f"ISIC folder not found: {root}; check data.path")
    folder = root / INPUT_DIR
    if not folder.is_dir():
        raise MissingPathError(
            f"{folder} not found; data.path must be the ISIC root holding "
            f"{INPUT_DIR}/ and {GROUND_TRUTH_CSV}"
        )
    if not (root / GROUND_TRUTH_CSV).is_file():
        raise MissingPathError(
            f"{root / GROUND_TRUTH_CSV} not found; put the official ground-truth "
            "CSV in the ISIC root"
        )
    return folder


def _image_files(folder: Path, ids: Sequence[str]) -> list[Path]:
    """Map ids to ``<id>.jpg`` files, raising if any listed image is absent."""
    present = set(os.listdir(folder))
    missing = [i for i in ids if f"{i}.jpg" not in present]
    if missing:
        raise MissingImageError(
            f"{len(missing)} image(s) listed in {GROUND_TRUTH_CSV} are missing from "
            f"{folder}: {format_ids(missing)}; restore the files or remove their rows"
        )
    return [folder / f"{i}.jpg" for i in ids]


def _metadata(root: Path, ids: list[str], centers_csv: str | Path | None) -> dict:
    """Return the meta columns (lesion_id, center, fold) for ``ids``."""
    meta_path = root / METADATA_CSV
    if meta_path.is_file():
        lesion = read_lesion_ids(meta_path, ids)
    else:
        log.info("no %s in %s: lesion_id left empty", METADATA_CSV, root)
        lesion = np.full(len(ids), "", dtype="<U1")
    center, fold = read_centers(find_centers_csv(root, centers_csv), ids)
    return {
        "image_ids": np.array(ids, dtype=str),
        "center": center,
        "lesion_id": lesion,
        "fold": fold,
    }


def read_isic_raw(
    root: str | Path,
    *,
    image_size: int = 64,
    classes: Sequence[str] = tuple(ISIC_CLASSES),
    centers: Sequence[str] | None = None,
    on_corrupt: OnCorrupt = "skip",
    empty_class: OnEmptyClass = "error",
    cache_dir: str | Path | None = None,
    centers_csv: str | Path | None = None,
) -> ImageSet:
    """Load an official ISIC 2019 training folder as an :class:`ImageSet`.

    Parameters
    ----------
    root
        Folder holding ``ISIC_2019_Training_Input/`` and the ground-truth CSV.
    image_size
        Output side in pixels (centre crop, then Lanczos resize).
    classes
        Class names to keep, in label order; each must be a ground-truth column.
        Images of other classes are dropped (the count is logged).
    centers
        Centres to keep (needs a centre CSV); None keeps all.
    on_corrupt
        ``"skip"`` (warn with count and ids) or ``"error"`` for undecodable files.
    empty_class
        ``"error"`` or ``"skip"`` when a configured class has no image.
    cache_dir
        Folder for the decoded-array cache; None disables it.
    centers_csv
        Explicit FLamby-style centre/fold CSV; None looks for a conventional name.

    Returns
    -------
    ImageSet
        Images with meta ``image_ids``, ``center``, ``lesion_id``, ``fold``
        (empty strings where unknown).
    """
    root = Path(root)
    folder = _check_layout(root)
    ids, columns, labels = read_ground_truth(root / GROUND_TRUTH_CSV)
    files = _image_files(folder, ids)
    meta = _metadata(root, ids, centers_csv)
    source = f"ISIC folder {root}"
    rows, labels = select_rows(
        labels, meta["center"], columns, classes, centers, source
    )
    images, ok = decode_cached([files[i] for i in rows], image_size, cache_dir)
    handle_corrupt([ids[i] for i in rows[~ok]], on_corrupt, str(folder))
    rows, labels = rows[ok], labels[ok]
    check_empty_classes(labels, classes, empty_class, source)
    meta = {k: v[rows] for k, v in meta.items()}
    return ImageSet(images, labels, tuple(classes), meta)


def cache_key(files: Sequence[Path], image_size: int, version: str) -> str:
    """Hash the file list (names, sizes, mtimes), the image size and a version.

    Parameters
    ----------
    files
        The image files, in load order.
    image_size
        Output side in pixels.
    version
        Reader version; bump it whenever decoding changes.

    Returns
    -------
    str
        A 24-character hex digest; any added, removed, resized or touched
        file gives a new key.
    """
    entries = []
    for f in files:
        st = f.stat()
        entries.append([f.name, st.st_size, st.st_mtime_ns])
    blob = json.dumps([version, image_size, entries]).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def load_cached(path: Path, n: int, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Return ``(images, ok)`` from a cache file, or None if absent or unusable.

    Parameters
    ----------
    path
        The cache ``.npz``.
    n
        Expected number of input files.
    size
        Expected image side.

    Returns
    -------
    tuple of np.ndarray or None
        Images of the decodable files (in order) and the boolean ``ok`` mask
        over all ``n`` files.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, ok = z["images"], z["ok"]
    except (OSError, ValueError, KeyError, EOFError) as exc:
        log.warning("ignoring unreadable cache %s (%s)", path, exc)
        return None
    if (
        ok.shape != (n,)
        or images.shape[1:] != (size, size, 3)
        or (len(images) != int(ok.sum()))
    ):
        log.warning("ignoring cache %s: shapes do not match the inputs", path)
        return None
    log.info("loaded %d decoded images from cache %s", len(images), path)
    return images, ok


def save_cached(path: Path, images: np.ndarray, ok: np.ndarray) -> None:
    """Write the cache atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, images=images, ok=ok)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("cached %d decoded images in %s", len(images), path)
