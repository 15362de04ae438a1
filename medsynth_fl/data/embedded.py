"""Builder of the embedded default data set (a small real ISIC 2019 subset).

``embedded/isic2019_64px_subset.npz`` holds 64 px JPEGs (quality 90) of the four
HAM10000 centres, at most :data:`CAP` images per (centre, class), in the packed
``jpeg`` + ``offsets`` layout of the 128 px shards. See ``embedded/README.md``
for the counts and the (non-commercial) licence, and :func:`.sources.read_embedded`
for the reader. Rebuild it with::

    python -m medsynth_fl.data.embedded --from ../shared/data
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import DataError
from .sources import ARRAY_GLOB, EMBEDDED_PATH, read_shard_table, write_npz_reproducible
from .transforms import pack_jpegs

log = logging.getLogger(__name__)

HAM_CENTERS = (
    "HAM_vidir_molemax",
    "HAM_vidir_modern",
    "HAM_rosendahl",
    "HAM_vienna_dias",
)
CAP = 150
JPEG_QUALITY = 90


def select_subset(
    labels: np.ndarray,
    center: np.ndarray,
    image_ids: np.ndarray,
    *,
    centers: Sequence[str] = HAM_CENTERS,
    cap: int = CAP,
    seed: int = 0,
) -> np.ndarray:
    """Choose at most ``cap`` images per (centre, label), deterministically.

    Candidates of each cell are sorted by image id, then a seeded permutation
    picks the first ``cap``; cells smaller than ``cap`` (the rare classes) are
    kept whole. The result does not depend on the input row order.

    Parameters
    ----------
    labels, center, image_ids
        One entry per candidate image.
    centers
        Centres to draw from.
    cap
        Maximum images per (centre, label) cell.
    seed
        Seed of the permutation.

    Returns
    -------
    np.ndarray
        Row positions of the chosen images, ordered by image id.
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for name in centers:
        for label in np.unique(labels):
            cell = np.flatnonzero((center == name) & (labels == label))
            cell = cell[np.argsort(image_ids[cell], kind="stable")]
            if len(cell) > cap:
                cell = cell[np.sort(rng.permutation(len(cell))[:cap])]
            chosen.append(cell)
    rows = np.concatenate(chosen)
    return rows[np.argsort(image_ids[rows], kind="stable")]


def count_table(
    labels: np.ndarray, center: np.ndarray, class_names: Sequence[str]
) -> str:
    """Render images per centre × class as a Markdown table.

    Parameters
    ----------
    labels
        Integer labels indexing ``class_names``.
    center
        Centre name per image.
    class_names
        Column names (classes without images are still shown).

    Returns
    -------
    str
        The table, one row per centre plus a total row.
    """
    lines = ["| centre | " + " | ".join(class_names) + " | total |"]
    lines.append("|---" * (len(class_names) + 2) + "|")
    rows = [(str(c), center == c) for c in dict.fromkeys(center.tolist())]
    for name, mask in [*rows, ("all", np.ones(len(center), dtype=bool))]:
        counts = np.bincount(labels[mask], minlength=len(class_names))
        cells = " | ".join(str(n) for n in counts)
        lines.append(f"| {name} | {cells} | {int(mask.sum())} |")
    return "\n".join(lines)


def build_embedded_subset(
    shared_dir: str | Path, out_path: str | Path = EMBEDDED_PATH
) -> Path:
    """Build the embedded subset from the 64 px shards of ``shared_dir``.

    Re-encodes the chosen 64 px arrays as JPEG (quality 90, 4:2:0) and writes a
    zip with fixed metadata, so the same shards and the same Pillow/zlib give
    the same bytes.

    Parameters
    ----------
    shared_dir
        Folder with ``isic_64_part*.npz`` (e.g. ``../shared/data``).
    out_path
        Where to write the ``.npz``.

    Returns
    -------
    Path
        ``out_path``.
    """
    table = read_shard_table(shared_dir, ARRAY_GLOB, extra=("center_id",))
    rows = select_subset(table["labels"], table["center"], table["image_ids"])
    if not len(rows):
        raise DataError(f"no image of the centres {HAM_CENTERS} in {shared_dir}")
    jpeg, offsets = pack_jpegs(table["images"][rows], JPEG_QUALITY)
    arrays: dict[str, np.ndarray] = {"jpeg": jpeg, "offsets": offsets}
    arrays["jpeg_quality"] = np.array(JPEG_QUALITY, dtype=np.int64)
    arrays["labels"] = table["labels"][rows].astype(np.int64)
    arrays["class_names"] = table["class_names"]
    for key in ("image_ids", "center", "center_id", "fold", "lesion_id"):
        arrays[key] = table[key][rows]
    path = write_npz_reproducible(Path(out_path), arrays)
    names = [str(c) for c in table["class_names"]]
    log.info(
        "wrote %s: %d images, %.2f MB\n%s",
        path,
        len(rows),
        path.stat().st_size / 1e6,
        count_table(arrays["labels"], arrays["center"], names),
    )
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m medsynth_fl.data.embedded --from DIR [--out FILE]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="src", required=True, help="shards folder")
    parser.add_argument("--out", default=str(EMBEDDED_PATH), help="output .npz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build_embedded_subset(args.src, args.out)


if __name__ == "__main__":
    main()
