"""Carve simulated sites out of one image set with the flwr-datasets partitioners.

The partitioners run over a light ``datasets.Dataset`` holding only the row
index, the label and the centre of every image (never the pixels); the
partitions they return are mapped back to index subsets of the image set.
``flwr_datasets`` is imported inside :func:`partition_sites` because importing
it takes seconds.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import numpy as np

from .errors import DataError
from .imageset import ImageSet

if TYPE_CHECKING:
    import datasets
    from flwr_datasets.partitioner import Partitioner

log = logging.getLogger(__name__)


def _index_dataset(images: ImageSet, order: np.ndarray) -> datasets.Dataset:
    """Build a pixel-free ``datasets.Dataset`` of rows ``order``."""
    import datasets

    center = images.meta.get("center", np.full(len(images), "", dtype="<U1"))
    return datasets.Dataset.from_dict(
        {
            "idx": order.astype(np.int64),
            "label": images.labels[order].astype(np.int64),
            "center": center[order].astype(str).tolist(),
        }
    )


def _make_partitioner(
    method: str, num_sites: int, alpha: float, seed: int, min_site_size: int
) -> Partitioner:
    """Return the flwr-datasets partitioner for ``method``."""
    from flwr_datasets.partitioner import (
        DirichletPartitioner,
        IidPartitioner,
        NaturalIdPartitioner,
    )

    builders = {
        "natural": lambda: NaturalIdPartitioner(partition_by="center"),
        "dirichlet": lambda: DirichletPartitioner(
            num_partitions=num_sites,
            partition_by="label",
            alpha=float(alpha),
            min_partition_size=min_site_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        ),
        "iid": lambda: IidPartitioner(num_partitions=num_sites),
    }
    if method not in builders:
        raise ValueError(f"unknown partition {method!r}; use one of {list(builders)}")
    return builders[method]()


def _check_natural(images: ImageSet) -> None:
    """Raise unless every image has a centre (natural partition)."""
    center = images.meta.get("center")
    missing = len(images) if center is None else int((center.astype(str) == "").sum())
    if missing:
        raise DataError(
            f"partition=natural needs a centre for every image, {missing} have "
            "none; use a source with centres, or partition=dirichlet/iid"
        )


def partition_sites(
    images: ImageSet,
    method: Literal["natural", "dirichlet", "iid"] = "natural",
    num_sites: int = 4,
    alpha: float = 0.5,
    seed: int = 0,
    min_site_size: int = 10,
) -> dict[str, ImageSet]:
    """Split ``images`` into simulated sites.

    Parameters
    ----------
    images
        The image set (``center`` meta needed for ``"natural"``).
    method
        ``"natural"``: one site per centre, named after it (``num_sites`` is
        ignored); ``"dirichlet"``: label proportions per site drawn from
        Dirichlet(``alpha``); ``"iid"``: a seeded shuffle cut into equal parts.
    num_sites
        Number of sites for ``"dirichlet"`` and ``"iid"`` (named ``site_0``...).
    alpha
        Dirichlet concentration; smaller is more skewed.
    seed
        Seed of the Dirichlet draw and of the IID shuffle.
    min_site_size
        Dirichlet only: redraw (up to 10 times) until every site has this many.

    Returns
    -------
    dict of str to ImageSet
        Sites by name; every image is in exactly one site, in original order.
    """
    if num_sites < 1:
        raise ValueError(f"num_sites must be >= 1, got {num_sites}")
    if method == "natural":
        _check_natural(images)
    order = np.arange(len(images))
    if method == "iid":
        order = np.random.default_rng(seed).permutation(len(images))
    partitioner = _make_partitioner(method, num_sites, alpha, seed, min_site_size)
    partitioner.dataset = _index_dataset(images, order)
    try:
        parts = _load_partitions(method, partitioner, num_sites)
    except ValueError as exc:  # e.g. Dirichlet gives up after 10 draws
        raise DataError(
            f"partition={method} failed for {len(images)} images over "
            f"{num_sites} sites ({exc}); raise alpha, lower min_site_size or "
            "use fewer sites"
        ) from exc
    sites = {name: images.subset(np.sort(idx)) for name, idx in parts.items()}
    log.info(
        "partition %s: %s", method, ", ".join(f"{k}={len(v)}" for k, v in sites.items())
    )
    return sites


def _load_partitions(
    method: str, partitioner: Partitioner, num_sites: int
) -> dict[str, np.ndarray]:
    """Return the row indices of every partition, by site name."""
    count = partitioner.num_partitions if method == "natural" else num_sites
    parts = {}
    for pid in range(count):
        idx = np.asarray(partitioner.load_partition(pid)["idx"], dtype=np.int64)
        if method == "natural":
            name = str(partitioner.partition_id_to_natural_id[pid])
        else:
            name = f"site_{pid}"
        parts[name] = idx
    return parts
