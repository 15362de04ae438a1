"""Typed errors of the data layer.

Every error is a :class:`ValueError`, so callers that only know "bad input" can
catch that; callers that want to react to one cause catch its subclass. Each
message names the offending path, image ids, column or class, and says what to
do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

# What to do with undecodable images, and with configured classes that have none.
OnCorrupt = Literal["skip", "error"]
OnEmptyClass = Literal["error", "skip"]

# How many ids an error message lists before it says "... and N more".
MAX_LISTED = 10


def format_ids(ids: Sequence[str], limit: int = MAX_LISTED) -> str:
    """Return ``ids`` as a short, readable list for an error message.

    Parameters
    ----------
    ids
        Image ids (or any names) to list.
    limit
        How many to show before summarising the rest as a count.

    Returns
    -------
    str
        For example ``"ISIC_0000001, ISIC_0000002 and 3 more"``.
    """
    shown = ", ".join(str(i) for i in list(ids)[:limit])
    rest = len(ids) - limit
    return f"{shown} and {rest} more" if rest > 0 else shown


class DataError(ValueError):
    """Input data is missing, malformed or inconsistent with the configuration."""


class MissingPathError(DataError):
    """A configured file or folder does not exist."""


class MissingImageError(DataError):
    """Images listed in a label file are not on disk."""


class CorruptImageError(DataError):
    """Image bytes cannot be decoded (and ``on_corrupt`` is ``"error"``)."""


class UnknownLabelError(DataError):
    """A configured class is not among the classes the source provides."""


class EmptyClassError(DataError):
    """A configured class has no images (and ``empty_class`` is ``"error"``)."""


class UnknownCenterError(DataError):
    """A configured centre is not among the centres the source provides."""


class DataFormatError(DataError):
    """A file has missing keys or columns, wrong dtypes or inconsistent shapes."""


class ImageSizeError(DataError):
    """The requested image size is larger than the source can provide."""
