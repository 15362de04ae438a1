"""Builders of tiny fake ISIC folders and shards for the data-layer tests.

Imported relatively (``from .data_fakes import ...``): ``tests`` is a package.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

ALL_COLUMNS = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def random_rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def smooth_rgb(rng: np.random.Generator, size: int) -> np.ndarray:
    """A blurry random picture (JPEG keeps it nearly intact, unlike pure noise)."""
    small = Image.fromarray(random_rgb(rng, 4, 4))
    return np.asarray(small.resize((size, size), Image.Resampling.BILINEAR))


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)


def _isic_rows(per_class: dict[str, int]) -> list[tuple[str, str]]:
    """(image id, class) pairs, ids in a fixed order."""
    rows, k = [], 0
    for name, count in per_class.items():
        for _ in range(count):
            rows.append((f"ISIC_{k:07d}", name))
            k += 1
    return rows


def build_isic_root(
    root: Path,
    per_class: dict[str, int],
    *,
    metadata: bool = True,
    centers: bool = True,
    seed: int = 0,
) -> Path:
    """Write a fake official ISIC 2019 folder; returns ``root``.

    Image k is 40×30 (landscape) or 30×44 (portrait); centre ``A`` for even k,
    ``B`` for odd; fold ``test`` every fourth image; lesion ``L{k // 2}`` (pairs
    of images share a lesion) except the last image, which has none.
    """
    rng = np.random.default_rng(seed)
    folder = root / "ISIC_2019_Training_Input"
    folder.mkdir(parents=True)
    rows = _isic_rows(per_class)
    for k, (image_id, _) in enumerate(rows):
        h, w = (30, 40) if k % 2 == 0 else (44, 30)
        Image.fromarray(random_rgb(rng, h, w)).save(folder / f"{image_id}.jpg")
    gt = [[i] + [f"{float(c == name):.1f}" for c in ALL_COLUMNS] for i, name in rows]
    write_csv(root / "ISIC_2019_Training_GroundTruth.csv", ["image", *ALL_COLUMNS], gt)
    if metadata:
        meta = [
            [i, 50, "back", "" if k == len(rows) - 1 else f"L{k // 2}", "female"]
            for k, (i, _) in enumerate(rows)
        ]
        header = ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"]
        write_csv(root / "ISIC_2019_Training_Metadata.csv", header, meta)
    if centers:
        table = [
            [i, name, k % 2, "AB"[k % 2], "test" if k % 4 == 3 else "train"]
            for k, (i, name) in enumerate(rows)
        ]
        header = ["image", "label", "center_id", "center", "fold"]
        write_csv(root / "isic2019_flamby_centers.csv", header, table)
    return root


def shard_columns(n: int, offset: int, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Metadata columns of a fake shard part of ``n`` rows."""
    k = np.arange(offset, offset + n)
    return {
        "labels": labels.astype(np.int64),
        "class_names": np.array(ALL_COLUMNS),
        "image_ids": np.array([f"ISIC_{i:07d}" for i in k]),
        "center": np.where(k % 2 == 0, "HAM_rosendahl", "HAM_vidir_modern"),
        "center_id": np.where(k % 2 == 0, 3, 2).astype(np.int64),
        "fold": np.where(k % 4 == 3, "test", "train"),
        "lesion_id": np.array([f"HAM_{i // 2:07d}" for i in k]),
    }


def build_shards(
    folder: Path, labels: list[int], parts: int = 2, seed: int = 0
) -> Path:
    """Write matching 64 px array parts and 128 px JPEG parts; returns ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    chunks = np.array_split(np.asarray(labels), parts)
    offset = 0
    for p, chunk in enumerate(chunks):
        cols = shard_columns(len(chunk), offset, chunk)
        big = np.stack([smooth_rgb(rng, 128) for _ in chunk])
        small = big[:, ::2, ::2].copy()
        np.savez_compressed(folder / f"isic_64_part{p:02d}.npz", images=small, **cols)
        blobs = [jpeg_bytes(img) for img in big]
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])])
        jpeg = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        np.savez(
            folder / f"isic_128jpg_part{p:02d}.npz",
            jpeg=jpeg,
            offsets=offsets.astype(np.int64),
            jpeg_quality=np.int64(90),
            **cols,
        )
        offset += len(chunk)
    return folder
