"""How close a site's generated samples are to the evaluation set, in one feature space.

Flower-free, on precomputed features (N × D):

- **KID** (Bińkowski et al., 2018): the unbiased squared MMD with the cubic
  polynomial kernel ``k(x, y) = (x·y / D + 1)³``, averaged over random subsets;
  0 when the two sets come from one distribution. Lower is better.
- **Precision and recall** (Kynkäänniemi et al., 2019): each set's manifold is
  the union of balls reaching each point's k-th nearest neighbour. Precision is
  the share of generated samples inside the real manifold (are they realistic?),
  recall the share of real images inside the generated manifold (is the data's
  variety covered?). 1 and 1 for one distribution; high precision with low
  recall is mode dropping.

Intervals resample both sets with replacement (precision/recall) or come from
the spread over KID's half-size subsets; they say how much the figure depends on
which images were drawn.

torchmetrics' KID needs torch-fidelity's Inception weights (a download, not
possible on a hospital network) or a wrapped module, and it has no
precision/recall; on features we already hold, both are a few lines of numpy.
"""

from __future__ import annotations

import numpy as np

from .contributions import Estimate

K_NEIGHBOURS = 3  # Kynkäänniemi et al.'s default


def _poly_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def kernel_inception_distance(
    real: np.ndarray,
    fake: np.ndarray,
    n_subsets: int = 100,
    subset_size: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """KID of ``fake`` against ``real``: mean over subsets, percentile interval.

    Each subset draws ``min(subset_size, half of the smaller set)`` rows of
    each set without replacement, as torchmetrics and the paper draw subsets.
    Half: with subsets as large as a set, every subset would hold that whole
    set and the interval would ignore its sampling noise; the spread of
    half-size subsets errs wide (about √2 × the full-set spread) instead.
    """
    real, fake = _features(real, "real"), _features(fake, "fake")
    size = min(subset_size, len(real) // 2, len(fake) // 2)
    if size < 2:
        raise ValueError("KID needs at least 4 samples on each side")
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            _unbiased_mmd2(
                real[rng.choice(len(real), size, replace=False)],
                fake[rng.choice(len(fake), size, replace=False)],
            )
            for _ in range(n_subsets)
        ]
    )
    lo, hi = np.quantile(values, ((1 - level) / 2, (1 + level) / 2))
    return Estimate(float(values.mean()), float(lo), float(hi))


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(sq, 0.0, None))


def _radii(within: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest neighbour (itself excluded)."""
    return np.partition(within, k, axis=1)[:, k]  # column 0 is the point itself


def _coverage(
    cross: np.ndarray, radii: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Share of the query rows of ``cross`` inside some ball (column) of ``radii``."""
    inside = (cross <= radii[None, :]).any(axis=1)
    return float(np.average(inside, weights=weights))


def precision_recall(
    real: np.ndarray,
    fake: np.ndarray,
    k: int = K_NEIGHBOURS,
    n_bootstrap: int = 100,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[Estimate, Estimate]:
    """Improved precision and recall of ``fake`` against ``real``.

    Bootstrap: both sets are resampled; each manifold is built from the
    *distinct* points drawn (a duplicate would be its own nearest neighbour and
    shrink the ball to nothing), and the share is weighed by how often each
    query point was drawn.
    """
    real, fake = _features(real, "real"), _features(fake, "fake")
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall needs more than k={k} samples per side")
    d_rr, d_ff, d_fr = (
        _pairwise(real, real),
        _pairwise(fake, fake),
        _pairwise(fake, real),
    )

    def both(r_idx: np.ndarray, f_idx: np.ndarray) -> tuple[float, float]:
        r_set, r_count = np.unique(r_idx, return_counts=True)
        f_set, f_count = np.unique(f_idx, return_counts=True)
        if min(len(r_set), len(f_set)) <= k:
            return np.nan, np.nan
        r_radii = _radii(d_rr[np.ix_(r_set, r_set)], k)
        f_radii = _radii(d_ff[np.ix_(f_set, f_set)], k)
        cross = d_fr[np.ix_(f_set, r_set)]
        return (
            _coverage(cross, r_radii, f_count),
            _coverage(cross.T, f_radii, r_count),
        )

    point = both(np.arange(len(real)), np.arange(len(fake)))
    rng = np.random.default_rng(seed)
    boots = np.array(
        [
            both(
                rng.integers(0, len(real), len(real)),
                rng.integers(0, len(fake), len(fake)),
            )
            for _ in range(n_bootstrap)
        ]
    ).reshape(-1, 2)
    q = ((1 - level) / 2, (1 + level) / 2)
    if len(boots) == 0:
        return tuple(Estimate(p, p, p) for p in point)  # type: ignore[return-value]
    lo, hi = np.nanquantile(boots, q, axis=0)
    return (
        Estimate(point[0], float(lo[0]), float(hi[0])),
        Estimate(point[1], float(lo[1]), float(hi[1])),
    )


def _features(x: np.ndarray, side: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"{side} features must be a finite N × D array")
    return x


def sample_quality(
    real: np.ndarray, fake: np.ndarray, n_bootstrap: int = 100, seed: int = 0
) -> dict[str, dict[str, float]]:
    """KID, precision and recall of one site's samples, JSON-ready.

    ``{"kid": {mean, ci_low, ci_high}, "precision": {…}, "recall": {…},
    "n_real": …, "n_fake": …}``.
    """
    precision, recall = precision_recall(real, fake, n_bootstrap=n_bootstrap, seed=seed)
    return {
        "kid": kernel_inception_distance(real, fake, seed=seed).as_dict(),
        "precision": precision.as_dict(),
        "recall": recall.as_dict(),
        "n_real": int(len(real)),
        "n_fake": int(len(fake)),
    }
