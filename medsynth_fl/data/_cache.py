"""On-disk cache of decoded image arrays, keyed by the exact input files."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


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
