"""Reader of the embedded default data set shipped in ``embedded/``.

The file is built by :mod:`medsynth_fl.data.embedded` (kept out of this module
so that ``python -m medsynth_fl.data.embedded`` runs a module the package has
not imported yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import ISIC_CLASSES
from ._npzio import read_npz
from .errors import ImageSizeError, OnCorrupt, OnEmptyClass
from .imageset import ImageSet
from .shards import META_KEYS, table_to_imageset

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
