"""Naming a data source by path: infer its kind and load the requested split."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

from ..config import DataConfig
from .errors import MissingPathError
from .imageset import ImageSet
from .loading import load_train_test
from .npz_source import load_npz

log = logging.getLogger(__name__)

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
