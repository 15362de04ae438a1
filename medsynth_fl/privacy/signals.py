"""Per-sample signals for the membership attacks: batched, without gradients.

A signal is one number (or vector) per candidate image: a critic score, a
recovery error, an embedding, a distance to the nearest reference point. The
attacks in :mod:`medsynth_fl.privacy.attacks` turn signals into membership
scores; every function here checks that it returns one row per input.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._utils import device_of, evaluating

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


def check_per_sample(values: np.ndarray, n: int, name: str) -> np.ndarray:
    """Return ``values`` if it has one finite row per sample, else raise.

    Parameters
    ----------
    values : the signal, shape ``[n]`` or ``[n, ...]``.
    n : the number of samples it must cover.
    name : signal name for the error message.

    Returns
    -------
    np.ndarray
        ``values``, unchanged.
    """
    if values.ndim == 0 or values.shape[0] != n:
        raise ValueError(
            f"signal {name!r} has shape {values.shape}, expected [{n}, ...]"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"signal {name!r} contains NaN or infinity")
    return values


@torch.no_grad()
def critic_scores(
    critic: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> np.ndarray:
    """Critic score per image with its label (LOGAN; higher = judged more real).

    Parameters
    ----------
    critic : a critic with ``forward(x, y) -> [N]``.
    x : images in [-1, 1], N×3×H×W.
    y : int64 labels, shape ``[N]``.
    batch_size : images per forward pass.

    Returns
    -------
    np.ndarray
        float64 scores, shape ``[N]``.
    """
    if len(x) != len(y):
        raise ValueError("images and labels differ in length")
    device = device_of(critic)
    with evaluating(critic):
        out = [
            critic(xb.to(device), yb.to(device)).double().cpu()
            for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True)
        ]
    scores = torch.cat(out).numpy() if out else np.zeros(0)
    return check_per_sample(scores, len(x), "critic")


@torch.no_grad()
def embeddings(
    feature_fn: FeatureFn,
    x: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Embed images with ``feature_fn`` (e.g. ``RandomConvFeatures.embed``).

    Parameters
    ----------
    feature_fn : maps a batch N×3×H×W in [-1, 1] to N×D (or N×…, flattened).
    x : images in [-1, 1], N×3×H×W.
    batch_size : images per call.
    device : where ``feature_fn`` runs; batches are moved there one at a time.

    Returns
    -------
    np.ndarray
        float32 embeddings, N×D.
    """
    out = [
        feature_fn(xb.to(device)).flatten(1).float().cpu() for xb in x.split(batch_size)
    ]
    emb = torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
    return check_per_sample(emb, len(x), "embedding")


def pixels(x: torch.Tensor) -> np.ndarray:
    """Images N×3×H×W as flat float32 pixel vectors, N×(3·H·W)."""
    return x.flatten(1).float().cpu().numpy()


@torch.no_grad()
def knn_distances(
    queries: np.ndarray,
    reference: np.ndarray,
    k: int = 1,
    exclude_self: bool = False,
    batch_size: int = 512,
) -> np.ndarray:
    """Euclidean distances from each query to its ``k`` nearest reference points.

    Distances are computed in float64, block by block over both sets, so that
    neither the full distance matrix nor a float64 copy of the reference is
    ever held in memory, and copies of a reference point come out at ~0.

    Parameters
    ----------
    queries : N×D points.
    reference : M×D points.
    k : neighbours to return (at most M, or M − 1 with ``exclude_self``).
    exclude_self : ``queries`` *is* ``reference``; skip each point's own entry.
    batch_size : rows per block.

    Returns
    -------
    np.ndarray
        N×k distances, ascending along each row.
    """
    m = len(reference) - int(exclude_self)
    if (
        queries.ndim != 2
        or reference.ndim != 2
        or queries.shape[1] != reference.shape[1]
    ):
        raise ValueError(f"point sets of shapes {queries.shape} and {reference.shape}")
    if exclude_self and len(queries) != len(reference):
        raise ValueError("exclude_self needs queries and reference to be one set")
    if not 1 <= k <= m:
        raise ValueError(f"k={k} but there are {m} reference points")
    rows = [
        _knn_block(queries, reference, start, batch_size, k, exclude_self)
        for start in range(0, len(queries), batch_size)
    ]
    dist = np.concatenate(rows) if rows else np.zeros((0, k))
    return check_per_sample(dist, len(queries), "knn_distances")


def _knn_block(
    queries: np.ndarray,
    reference: np.ndarray,
    start: int,
    batch_size: int,
    k: int,
    exclude_self: bool,
) -> np.ndarray:
    """Return the k smallest distances of queries[start:start + batch_size]."""
    q = torch.from_numpy(queries[start : start + batch_size]).double()
    best = torch.full((len(q), k), float("inf"), dtype=torch.float64)
    for r0 in range(0, len(reference), batch_size):
        r = torch.from_numpy(reference[r0 : r0 + batch_size]).double()
        d = torch.cdist(q, r)
        if exclude_self:
            i = torch.arange(start, start + len(q))[:, None]
            d[i == torch.arange(r0, r0 + len(r))[None, :]] = float("inf")
        best = torch.cat([best, d], dim=1).topk(k, dim=1, largest=False).values
    return best.numpy()


def nn_distances(
    queries: np.ndarray, reference: np.ndarray, exclude_self: bool = False
) -> np.ndarray:
    """Distance from each query to its nearest reference point, shape ``[N]``."""
    return knn_distances(queries, reference, 1, exclude_self)[:, 0]


@torch.no_grad()
def recovery_errors(
    generator: nn.Module,
    encoder: nn.Module,
    phi: FeatureFn,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
) -> np.ndarray:
    """Latent-recovery error ``‖φ(G(E(x), y)) − φ(x)‖²`` per image (seed 004 eq. 1).

    The squared error is averaged over the feature elements, so errors of
    different feature networks are on comparable scales.

    Parameters
    ----------
    generator : the generator G, ``forward(z, y)``.
    encoder : the recovery encoder E, image → noise.
    phi : feature function φ (``torch.nn.Identity()`` for pixels).
    x : images in [-1, 1], N×3×H×W.
    y : int64 labels, shape ``[N]``.
    batch_size : images per forward pass.

    Returns
    -------
    np.ndarray
        float64 errors, shape ``[N]``.
    """
    if len(x) != len(y):
        raise ValueError("images and labels differ in length")
    device = device_of(generator)
    out = []
    with evaluating(generator), evaluating(encoder):
        for xb, yb in zip(x.split(batch_size), y.split(batch_size), strict=True):
            xb, yb = xb.to(device), yb.to(device)
            diff = phi(generator(encoder(xb), yb)) - phi(xb)
            out.append(diff.flatten(1).pow(2).mean(1).double().cpu())
    errors = torch.cat(out).numpy() if out else np.zeros(0)
    return check_per_sample(errors, len(x), "recovery_errors")
