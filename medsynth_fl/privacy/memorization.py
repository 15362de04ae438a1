"""Memorisation rate and the rejection filter of seed 001.

Seed 001 calls a synthetic image "the same identity" as a training image when
it is closer to it than any two training images are to each other, i.e. closer
than the minimum train-to-train L2 distance, and rejects such samples.

Decision: the minimum is taken over *distinct* training images. Exact
duplicates (the same picture filed twice) would otherwise set the threshold to
0 and switch the filter off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.imageset import ImageSet
from .signals import FeatureFn, embeddings, nn_distances, pixels


def distinct_images(images: ImageSet) -> ImageSet:
    """Drop exact (byte-identical) duplicate images, keeping first occurrences."""
    flat = images.images.reshape(len(images), -1)
    _, first = np.unique(flat, axis=0, return_index=True)
    return images.subset(np.sort(first))


def image_points(
    images: ImageSet,
    feature_fn: FeatureFn | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> np.ndarray:
    """Points of the images: flat pixels in [-1, 1], or ``feature_fn`` embeddings.

    Parameters
    ----------
    images : the images.
    feature_fn : embedding function; None for pixel space.
    device : where ``feature_fn`` runs.
    batch_size : images per call of ``feature_fn``.

    Returns
    -------
    np.ndarray
        N×D points.
    """
    x, _ = images.to_tensors()
    if feature_fn is None:
        return pixels(x)
    return embeddings(feature_fn, x, batch_size, device)


def min_distinct_distance(train_points: np.ndarray) -> float:
    """Minimum distance between two distinct training points (the identity threshold).

    Parameters
    ----------
    train_points : N×D points of the training images; identical rows count once.

    Returns
    -------
    float
        The smallest distance between two different rows.
    """
    unique = np.unique(train_points, axis=0)
    if len(unique) < 2:
        raise ValueError("need at least two distinct training points")
    return float(nn_distances(unique, unique, exclude_self=True).min())


def memorized_mask(
    generated_points: np.ndarray, train_points: np.ndarray, threshold: float
) -> np.ndarray:
    """Flag generated points strictly closer than ``threshold`` to a training point.

    Parameters
    ----------
    generated_points : M×D points of generated samples.
    train_points : N×D points of the training images.
    threshold : the identity distance (see :func:`min_distinct_distance`).

    Returns
    -------
    np.ndarray
        Boolean mask of length M; True means "copies a training image".
    """
    return nn_distances(generated_points, train_points) < threshold


def memorization_rate(
    generated_points: np.ndarray,
    train_points: np.ndarray,
    threshold: float | None = None,
) -> float:
    """Fraction of generated samples nearer a training image than the threshold.

    Parameters
    ----------
    generated_points : M×D points of generated samples (pixels or embeddings).
    train_points : N×D points of the training images, in the same space.
    threshold : identity distance; None computes :func:`min_distinct_distance`.

    Returns
    -------
    float
        The memorisation rate in [0, 1] (seed 001).
    """
    if threshold is None:
        threshold = min_distinct_distance(train_points)
    return float(memorized_mask(generated_points, train_points, threshold).mean())


@dataclass(frozen=True)
class RejectionResult:
    """Generated samples kept by the filter, and what it dropped.

    Attributes
    ----------
    kept : the samples at or beyond the threshold from every training image.
    rejected : boolean mask over the input samples (True = dropped).
    rejection_rate : fraction of the input samples dropped.
    threshold : the identity distance used.
    """

    kept: ImageSet
    rejected: np.ndarray
    rejection_rate: float
    threshold: float


@torch.no_grad()
def reject_memorized(
    generated: ImageSet,
    train: ImageSet,
    feature_fn: FeatureFn | None = None,
    threshold: float | None = None,
    device: torch.device | str = "cpu",
) -> RejectionResult:
    """Drop generated samples closer to a training image than seed 001's threshold.

    Parameters
    ----------
    generated : the samples a site drew from its generator.
    train : the site's training images.
    feature_fn : compare in this embedding; None compares pixels (seed 001).
    threshold : identity distance; None uses the minimum distance between
        distinct training images in the same space.
    device : where ``feature_fn`` runs.

    Returns
    -------
    RejectionResult
        Kept samples, the rejected mask, the rejection rate and the threshold.
    """
    if len(generated) == 0:
        raise ValueError("no generated samples to filter")
    train_points = image_points(distinct_images(train), feature_fn, device)
    if threshold is None:
        threshold = min_distinct_distance(train_points)
    gen_points = image_points(generated, feature_fn, device)
    mask = memorized_mask(gen_points, train_points, threshold)
    return RejectionResult(
        kept=generated.subset(~mask),
        rejected=mask,
        rejection_rate=float(mask.mean()),
        threshold=float(threshold),
    )
