"""Distance attacks in pixel or embedding space (seed 003), from generated samples only.

* **Pairwise**: a generator that copies a training image puts a sample right
  next to it, so a candidate close to its nearest generated sample is likely a
  member. Score ``−d_1(x)``: a larger score (smaller distance) means **member**.
* **Distribution**: memorisation makes generated samples *cluster* around
  training images. The density of generated samples around a candidate is
  estimated by k nearest neighbours, ``p̂(x) ∝ k / r_k(x)^D`` with ``r_k`` the
  distance to the k-th nearest generated sample; the score ``−r_k(x)`` is a
  monotone function of it: a larger score (denser) means **member**. Unlike a
  count of samples within a fixed radius, it never ties at zero when real
  images sit farther from the samples than the samples from each other.
"""

from __future__ import annotations

import numpy as np


def pairwise_scores(nn_distances: np.ndarray) -> np.ndarray:
    """Membership scores of the pairwise attack, ``−distance to nearest sample``.

    Parameters
    ----------
    nn_distances : each candidate's distance to its nearest generated sample.

    Returns
    -------
    np.ndarray
        Membership scores; larger means "member".
    """
    return -np.asarray(nn_distances, dtype=np.float64)


def density_scores(kth_distances: np.ndarray) -> np.ndarray:
    """Membership scores of the distribution attack, ``−r_k`` (k-NN density).

    Parameters
    ----------
    kth_distances : each candidate's distance to its k-th nearest generated sample.

    Returns
    -------
    np.ndarray
        Membership scores; larger (denser) means "member".
    """
    return -np.asarray(kth_distances, dtype=np.float64)
