"""Safe, single-pass ``.npz`` reading and byte-reproducible ``.npz`` writing."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .errors import DataFormatError, MissingPathError

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
