"""Where images come from: ``.npz`` files, the packed ISIC shards, the embedded subset.

Every reader returns an :class:`ImageSet`. :func:`load_images` and
:func:`load_train_test` pick the reader from a :class:`DataConfig`;
:func:`infer_source` names the kind of a path. ``.npz`` files are read once
per key without pickle, and written byte-reproducibly. The official ISIC
folder layout has its own module, :mod:`.isic_folder`.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from ..config import ISIC_CLASSES, DataConfig
from .errors import (
    DataError,
    DataFormatError,
    ImageSizeError,
    MissingPathError,
    OnCorrupt,
    OnEmptyClass,
)
from .imageset import META_COLUMNS, SOFT_LABELS, ImageSet
from .isic_folder import read_isic_raw
from .splits import split_train_test
from .tables import check_empty_classes, select_rows
from .transforms import decode_packed, fit_size, handle_corrupt

# Fixed timestamp for every zip member, so rebuilt files are byte-identical.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def read_npz(
    path: Path, required: Iterable[str], optional: Iterable[str] = ()
) -> dict[str, np.ndarray]:
    """Read the listed keys of an ``.npz`` file, each exactly once, without pickle.

    ``NpzFile`` decompresses a member again on every access, so every key is
    read into memory once here and used from the returned dict.

    Parameters
    ----------
    path
        The ``.npz`` file.
    required
        Keys that must be present.
    optional
        Keys read when present.

    Returns
    -------
    dict of str to np.ndarray
        The arrays found, by key.

    Raises
    ------
    MissingPathError
        If ``path`` does not exist.
    DataFormatError
        If the file is not a readable npz, lacks a required key, or holds
        object arrays (which would need ``allow_pickle``).
    """
    if not path.is_file():
        raise MissingPathError(f"file not found: {path}; check the data path")
    required = list(required)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in required if k not in z.files]
            if missing:
                raise DataFormatError(
                    f"{path} lacks key(s) {missing} (it has {sorted(z.files)}); "
                    "rebuild the file with the matching writer"
                )
            wanted = required + [k for k in optional if k in z.files]
            return {k: z[k] for k in wanted}
    except DataFormatError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFormatError(
            f"{path} is not a readable pickle-free .npz file ({exc}); "
            "re-create or re-download it"
        ) from exc


def npz_keys(path: Path) -> list[str]:
    """Return the array names stored in an ``.npz`` file (nothing is decompressed)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [n.removesuffix(".npy") for n in zf.namelist()]
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataFormatError(f"{path} is not a readable .npz file ({exc})") from exc


def write_npz_reproducible(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` as a deflate-compressed ``.npz`` with fixed zip metadata.

    Unlike ``np.savez_compressed`` (which stamps the current time into every
    member), the same arrays always give the same bytes.

    Parameters
    ----------
    path
        Output file; its folder is created.
    arrays
        Arrays by key, written in the given order; object arrays are refused.

    Returns
    -------
    Path
        ``path``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(value), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    return path


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


EMBEDDED_PATH = (
    Path(__file__).resolve().parent / "embedded" / "isic2019_64px_subset.npz"
)
EMBEDDED_SIZE = 64


def read_embedded(
    *,
    image_size: int = EMBEDDED_SIZE,
    classes: Sequence[str] = tuple(ISIC_CLASSES),
    centers: Sequence[str] | None = None,
    on_corrupt: OnCorrupt = "skip",
    empty_class: OnEmptyClass = "error",
    path: str | Path = EMBEDDED_PATH,
) -> ImageSet:
    """Load the embedded ISIC subset as an :class:`ImageSet`.

    Parameters
    ----------
    image_size
        Output side in pixels, at most 64 (smaller sizes are Lanczos-resized).
    classes
        Class names to keep, in label order; matched by name.
    centers
        Centres to keep; None keeps all four HAM centres.
    on_corrupt
        ``"skip"`` or ``"error"`` for undecodable JPEG bytes.
    empty_class
        ``"error"`` or ``"skip"`` when a class has no image.
    path
        The subset file (tests point this at a fake).

    Returns
    -------
    ImageSet
        Images with meta ``image_ids``, ``center``, ``lesion_id``, ``fold``.
    """
    if image_size > EMBEDDED_SIZE:
        raise ImageSizeError(
            f"the embedded subset holds {EMBEDDED_SIZE} px images, data.image_size "
            f"is {image_size}; lower it or use data.source=shards (up to 128 px)"
        )
    path = Path(path)
    table = read_npz(path, required=("jpeg", "offsets", "class_names", *META_KEYS))
    return table_to_imageset(
        table,
        f"embedded subset {path}",
        image_size=image_size,
        classes=classes,
        centers=centers,
        on_corrupt=on_corrupt,
        empty_class=empty_class,
    )


def _require_path(cfg: DataConfig) -> str:
    """Return ``cfg.path``, raising if a path-based source has none."""
    if not cfg.path:
        hints = {
            "shards": "the folder holding isic_*_part*.npz",
            "isic_raw": "the ISIC 2019 root holding ISIC_2019_Training_Input/",
            "npz": "an .npz written by ImageSet.save_npz",
        }
        raise DataError(
            f"data.source={cfg.source} needs data.path ({hints[cfg.source]}); "
            "set it, or use data.source=embedded"
        )
    return cfg.path


def _selection(cfg: DataConfig) -> dict:
    """The keyword arguments every reader takes from the config."""
    return {
        "image_size": cfg.image_size,
        "classes": cfg.classes,
        "centers": cfg.centers,
        "empty_class": cfg.empty_class,
    }


def _embedded(cfg: DataConfig) -> ImageSet:
    return read_embedded(**_selection(cfg), on_corrupt=cfg.on_corrupt)


def _shards(cfg: DataConfig) -> ImageSet:
    return read_shards(_require_path(cfg), **_selection(cfg), on_corrupt=cfg.on_corrupt)


def _isic_raw(cfg: DataConfig) -> ImageSet:
    return read_isic_raw(
        _require_path(cfg),
        **_selection(cfg),
        on_corrupt=cfg.on_corrupt,
        cache_dir=cfg.cache_dir,
    )


def _npz(cfg: DataConfig) -> ImageSet:
    return load_npz(_require_path(cfg), **_selection(cfg))


READERS: dict[str, Callable[[DataConfig], ImageSet]] = {
    "embedded": _embedded,
    "shards": _shards,
    "isic_raw": _isic_raw,
    "npz": _npz,
}


def load_images(cfg: DataConfig) -> ImageSet:
    """Load the images described by ``cfg``.

    Parameters
    ----------
    cfg
        The data section: ``source`` and ``path`` pick the reader; ``image_size``,
        ``classes``, ``centers``, ``on_corrupt``, ``empty_class`` and
        ``cache_dir`` (``isic_raw`` only) shape what it returns.

    Returns
    -------
    ImageSet
        Images of ``cfg.image_size`` px with labels indexing ``cfg.classes``
        and meta ``image_ids``, ``center``, ``lesion_id``, ``fold``.

    Raises
    ------
    DataError
        Or a subclass, naming the path, ids, column, class or centre at fault.
    """
    if cfg.source not in READERS:
        raise DataError(
            f"unknown data.source {cfg.source!r}; use one of {list(READERS)}"
        )
    images = READERS[cfg.source](cfg)
    log.info(
        "loaded %d images (%s, %d px): %s",
        len(images),
        cfg.source,
        images.image_size,
        dict(zip(images.class_names, images.class_counts().tolist(), strict=True)),
    )
    return images


def load_train_test(cfg: DataConfig) -> tuple[ImageSet, ImageSet]:
    """Load the images of ``cfg`` and split them as ``cfg.split`` says.

    Parameters
    ----------
    cfg
        The data section; ``split``, ``test_fraction`` and ``split_seed`` drive
        :func:`split_train_test`.

    Returns
    -------
    tuple of ImageSet
        ``(train, test)`` with no lesion on both sides.
    """
    images = load_images(cfg)
    return split_train_test(images, cfg.split, cfg.test_fraction, cfg.split_seed)


Source = Literal["embedded", "shards", "isic_raw", "npz"]
Split = Literal["train", "test", "all"]


def infer_source(path: str) -> Source:
    """Tell the kind of a data path.

    One of ``embedded``, an ``.npz`` image set, a shards folder
    (``isic_*_part*.npz``) or an ISIC 2019 folder.
    """
    if path == "embedded":
        return "embedded"
    p = Path(path)
    if not p.exists():
        raise MissingPathError(f"data path not found: {p}")
    if p.is_file() and p.suffix == ".npz":
        return "npz"
    if p.is_dir() and (p / "ISIC_2019_Training_Input").is_dir():
        return "isic_raw"
    if p.is_dir() and any(p.glob("isic_*_part*.npz")):
        return "shards"
    raise MissingPathError(
        f"{p} is neither an ISIC 2019 folder (ISIC_2019_Training_Input/ + "
        "ISIC_2019_Training_GroundTruth.csv), a shards folder (isic_64_part*.npz) "
        "nor an .npz image set"
    )


def data_overrides(path: str) -> list[str]:
    """Config overrides that point ``data`` at ``path``."""
    source = infer_source(path)
    overrides = [f"data.source={source}"]
    if source != "embedded":
        overrides.append(f"data.path={json.dumps(str(Path(path).resolve()))}")
    return overrides


def load_image_source(spec: str, cfg: DataConfig, split: Split) -> ImageSet:
    """Load ``spec`` (an .npz image set, a data folder or ``embedded``).

    An ``.npz`` image set (e.g. a condensed set) is used whole; a data folder
    is split as ``cfg`` says and ``split`` picks the part.
    """
    source = infer_source(spec)
    if source == "npz":
        if split != "all":
            log.info(
                "%s is an image set: using all of it (split %r ignored)", spec, split
            )
        return load_npz(Path(spec), classes=cfg.classes)
    path = None if source == "embedded" else str(Path(spec).resolve())
    train, test = load_train_test(
        cfg.model_copy(update={"source": source, "path": path})
    )
    if split == "all":
        return ImageSet.concat([train, test])
    return train if split == "train" else test
