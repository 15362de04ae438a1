"""Fixtures of the data-layer tests (builders live in ``data_fakes.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .data_fakes import build_isic_root, build_shards


@pytest.fixture
def isic_root(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``isic_root(per_class, metadata=..., centers=...)`` in tmp_path."""

    def make(per_class: dict[str, int] | None = None, **kwargs: object) -> Path:
        per_class = per_class or {"MEL": 3, "NV": 4, "BCC": 3}
        return build_isic_root(tmp_path / "isic", per_class, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def shards_dir(tmp_path: Path) -> Path:
    """Fake shards: 16 images, 5 each of MEL/NV/BCC (both centres) + one UNK."""
    labels = [0, 1, 2, 0, 1, 2, 8, 0, 1, 2, 0, 1, 2, 1, 0, 2]
    return build_shards(tmp_path / "shards", labels)
