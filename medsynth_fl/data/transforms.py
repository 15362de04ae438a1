"""Pixel helpers shared by the readers: decode, crop, resize, JPEG packing."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .errors import CorruptImageError, ImageSizeError, OnCorrupt, format_ids

log = logging.getLogger(__name__)

# What PIL raises on bytes it cannot decode (UnidentifiedImageError is an OSError).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def square_resize(image: Image.Image, size: int) -> np.ndarray:
    """Centre-crop ``image`` to a square and resize it with Lanczos.

    Parameters
    ----------
    image
        Any PIL image; it is converted to RGB.
    size
        Side of the output in pixels.

    Returns
    -------
    np.ndarray
        uint8 array of shape ``(size, size, 3)``.
    """
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    box = (left, top, left + side, top + side)
    if side == size:
        return np.asarray(image.crop(box), dtype=np.uint8)
    out = image.resize((size, size), Image.Resampling.LANCZOS, box=box)
    return np.asarray(out, dtype=np.uint8)


def fit_size(images: np.ndarray, size: int, source: str) -> np.ndarray:
    """Resize square uint8 images down to ``size`` (never up).

    Parameters
    ----------
    images
        uint8 array ``N×S×S×3``.
    size
        Wanted side in pixels; must not exceed ``S``.
    source
        Name of the data source, used in the error message.

    Returns
    -------
    np.ndarray
        ``images`` itself when ``S == size``, else a Lanczos-resized copy.

    Raises
    ------
    ImageSizeError
        If ``size`` is larger than the stored images (we never upsample).
    """
    stored = int(images.shape[1])
    if size == stored:
        return images
    if size > stored:
        raise ImageSizeError(
            f"{source} stores {stored} px images but data.image_size={size}; "
            f"set data.image_size <= {stored} or use a source with larger images "
            "(we do not upsample)"
        )
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = square_resize(Image.fromarray(img), size)
    return out


def decode_jpeg(data: bytes, size: int | None = None) -> np.ndarray:
    """Decode JPEG (or any PIL-readable) bytes to an RGB array.

    Parameters
    ----------
    data
        The encoded bytes.
    size
        If given, centre-crop and resize to ``size``; else keep the stored size.

    Returns
    -------
    np.ndarray
        uint8 ``H×W×3`` array.
    """
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if size is not None:
            return square_resize(image, size)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_packed(
    jpeg: np.ndarray, offsets: np.ndarray, index: np.ndarray
) -> list[np.ndarray | None]:
    """Decode images ``index`` of a packed ``jpeg``/``offsets`` buffer.

    Parameters
    ----------
    jpeg
        uint8 buffer holding all JPEG files back to back.
    offsets
        int64 array of length ``n + 1``; image ``i`` is
        ``jpeg[offsets[i]:offsets[i + 1]]``.
    index
        Integer positions of the images to decode.

    Returns
    -------
    list of np.ndarray or None
        One decoded array per position, or None where the bytes are corrupt.
    """
    out: list[np.ndarray | None] = []
    for i in index:
        try:
            out.append(decode_jpeg(jpeg[offsets[i] : offsets[i + 1]].tobytes()))
        except DECODE_ERRORS:
            out.append(None)
    return out


def handle_corrupt(
    corrupt_ids: Sequence[str], on_corrupt: OnCorrupt, where: str
) -> None:
    """Raise or warn about images that could not be decoded.

    Parameters
    ----------
    corrupt_ids
        Ids of the undecodable images (nothing happens when empty).
    on_corrupt
        ``"error"`` raises; ``"skip"`` logs a warning with the count and ids.
    where
        The file or folder the images came from, for the message.

    Raises
    ------
    CorruptImageError
        If there are corrupt images and ``on_corrupt == "error"``.
    """
    if on_corrupt not in ("skip", "error"):
        raise ValueError(f"on_corrupt must be 'skip' or 'error', got {on_corrupt!r}")
    if not corrupt_ids:
        return
    ids = format_ids(sorted(corrupt_ids))
    if on_corrupt == "error":
        raise CorruptImageError(
            f"{len(corrupt_ids)} image(s) in {where} cannot be decoded: {ids}; "
            "replace or remove those files, or set data.on_corrupt=skip"
        )
    log.warning("skipped %d corrupt image(s) in %s: %s", len(corrupt_ids), where, ids)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """Encode one RGB uint8 array as baseline JPEG with 4:2:0 subsampling."""
    buf = io.BytesIO()
    Image.fromarray(image).save(
        buf, format="JPEG", quality=quality, subsampling=2, optimize=False
    )
    return buf.getvalue()


def pack_jpegs(images: np.ndarray, quality: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode images and pack them as one ``jpeg`` buffer plus ``offsets``.

    Parameters
    ----------
    images
        uint8 ``N×H×W×3``.
    quality
        JPEG quality (1-95).

    Returns
    -------
    tuple of np.ndarray
        ``jpeg`` (uint8, all files back to back) and ``offsets`` (int64, ``N + 1``).
    """
    blobs = [encode_jpeg(img, quality) for img in images]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    jpeg = np.frombuffer(b"".join(blobs), dtype=np.uint8).copy()
    return jpeg, offsets
