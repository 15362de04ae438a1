"""One entry point from a :class:`DataConfig` to images and their train/test split."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..config import DataConfig
from .embedded_source import read_embedded
from .errors import DataError
from .imageset import ImageSet
from .isic_raw import read_isic_raw
from .npz_source import load_npz
from .shards import read_shards
from .splits import split_train_test

log = logging.getLogger(__name__)


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


def _embedded(cfg: DataConfig) -> ImageSet:
    return read_embedded(
        image_size=cfg.image_size,
        classes=cfg.classes,
        centers=cfg.centers,
        on_corrupt=cfg.on_corrupt,
        empty_class=cfg.empty_class,
    )


def _shards(cfg: DataConfig) -> ImageSet:
    return read_shards(
        _require_path(cfg),
        image_size=cfg.image_size,
        classes=cfg.classes,
        centers=cfg.centers,
        on_corrupt=cfg.on_corrupt,
        empty_class=cfg.empty_class,
    )


def _isic_raw(cfg: DataConfig) -> ImageSet:
    return read_isic_raw(
        _require_path(cfg),
        image_size=cfg.image_size,
        classes=cfg.classes,
        centers=cfg.centers,
        on_corrupt=cfg.on_corrupt,
        empty_class=cfg.empty_class,
        cache_dir=cfg.cache_dir,
    )


def _npz(cfg: DataConfig) -> ImageSet:
    return load_npz(
        _require_path(cfg),
        image_size=cfg.image_size,
        classes=cfg.classes,
        centers=cfg.centers,
        empty_class=cfg.empty_class,
    )


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
