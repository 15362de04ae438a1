"""Data layer: readers for ISIC sources, lesion-safe splits and site partitions.

Every reader returns an :class:`ImageSet`; :func:`load_images` and
:func:`load_train_test` pick the reader from a :class:`~medsynth_fl.config.DataConfig`.
"""

from .errors import (
    CorruptImageError,
    DataError,
    DataFormatError,
    EmptyClassError,
    ImageSizeError,
    MissingImageError,
    MissingPathError,
    UnknownCenterError,
    UnknownLabelError,
)
from .imageset import META_COLUMNS, ImageSet, images_from_tensor
from .isic_folder import read_isic_raw
from .partition import partition_sites
from .sources import (
    EMBEDDED_PATH,
    data_overrides,
    infer_source,
    load_image_source,
    load_images,
    load_npz,
    load_train_test,
    read_embedded,
    read_shards,
)
from .splits import split_train_test


def __getattr__(name: str) -> object:
    """Import the embedded-subset builder only when it is asked for."""
    if name == "build_embedded_subset":
        from .embedded import build_embedded_subset

        return build_embedded_subset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "EMBEDDED_PATH",
    "META_COLUMNS",
    "CorruptImageError",
    "DataError",
    "DataFormatError",
    "EmptyClassError",
    "ImageSet",
    "ImageSizeError",
    "MissingImageError",
    "MissingPathError",
    "UnknownCenterError",
    "UnknownLabelError",
    "build_embedded_subset",
    "data_overrides",
    "infer_source",
    "load_image_source",
    "images_from_tensor",
    "load_images",
    "load_npz",
    "load_train_test",
    "partition_sites",
    "read_embedded",
    "read_isic_raw",
    "read_shards",
    "split_train_test",
]
