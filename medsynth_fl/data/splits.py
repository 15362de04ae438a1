"""Train/test splits that never put one lesion on both sides.

``method="lesion"``: our own split, grouped by ``lesion_id`` (an image without a
lesion id is its own group) and stratified by label where possible.

``method="flamby"``: FLamby's ``fold`` column, made lesion-safe. FLamby's folds
are not grouped by lesion, so the train fold is kept intact and every test-fold
image whose lesion also occurs in train is dropped (the count is logged).
Images without a fold (UDA-1) get a seeded lesion-grouped split, merged in
before that clean-up.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import numpy as np

from .errors import DataError, DataFormatError
from .imageset import ImageSet

log = logging.getLogger(__name__)

# Use StratifiedGroupKFold when 1/k is this close to test_fraction.
_FOLD_TOLERANCE = 0.02


def lesion_groups(images: ImageSet) -> np.ndarray:
    """Return a group key per image: its lesion id, or a unique key if it has none.

    Parameters
    ----------
    images
        An image set, ideally with a ``lesion_id`` meta column.

    Returns
    -------
    np.ndarray
        String group keys, one per image.
    """
    n = len(images)
    lesion = images.meta.get("lesion_id")
    if lesion is None:
        log.warning("no lesion_id column: every image is its own group")
        lesion = np.full(n, "", dtype="<U1")
    own = np.char.add("\x00image:", np.arange(n).astype(str))
    return np.where(lesion.astype(str) == "", own, lesion.astype(str))


def grouped_test_mask(
    labels: np.ndarray, groups: np.ndarray, test_fraction: float, seed: int
) -> np.ndarray:
    """Choose test rows so that no group is split, stratified by label if possible.

    Uses ``StratifiedGroupKFold`` (first fold) when ``1/test_fraction`` is close
    to an integer ``k >= 2`` and there are at least ``k`` groups; otherwise
    ``GroupShuffleSplit`` (not stratified).

    Parameters
    ----------
    labels
        Integer label per row.
    groups
        Group key per row.
    test_fraction
        Wanted fraction of rows in test, in (0, 1).
    seed
        Seed of the shuffling.

    Returns
    -------
    np.ndarray
        Boolean mask of the test rows.
    """
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise DataError(
            f"cannot split {len(labels)} image(s) from {n_groups} lesion group(s) "
            "into train and test; use more data"
        )
    k = max(2, round(1 / test_fraction))
    dummy = np.zeros((len(labels), 1))
    mask = np.zeros(len(labels), dtype=bool)
    if abs(1 / k - test_fraction) <= _FOLD_TOLERANCE and n_groups >= k:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # "least populated class has only ..."
            warnings.simplefilter("ignore", UserWarning)
            _, test = next(splitter.split(dummy, labels, groups))
    else:
        splitter = GroupShuffleSplit(1, test_size=test_fraction, random_state=seed)
        _, test = next(splitter.split(dummy, labels, groups))
    mask[test] = True
    return mask


def drop_straddling(
    train: np.ndarray, test: np.ndarray, groups: np.ndarray
) -> np.ndarray:
    """Remove from ``test`` every row whose group also has a row in ``train``.

    Parameters
    ----------
    train, test
        Boolean masks.
    groups
        Group key per row.

    Returns
    -------
    np.ndarray
        The cleaned test mask.
    """
    straddling = test & np.isin(groups, groups[train])
    if straddling.any():
        log.info(
            "dropped %d test image(s) whose lesion is also in train",
            int(straddling.sum()),
        )
    return test & ~straddling


def _flamby_masks(
    images: ImageSet, groups: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train/test masks from the fold column (see the module docstring)."""
    fold = images.meta["fold"].astype(str)
    unexpected = sorted(set(fold.tolist()) - {"train", "test", ""})
    if unexpected:
        raise DataFormatError(
            f"fold column has value(s) {unexpected}; expected 'train', 'test' or ''"
        )
    train, test = fold == "train", fold == "test"
    loose = np.flatnonzero(fold == "")
    if len(loose):
        log.info("%d image(s) without a fold get a lesion-grouped split", len(loose))
        sub = grouped_test_mask(
            images.labels[loose], groups[loose], test_fraction, seed
        )
        test[loose[sub]] = True
        train[loose[~sub]] = True
    return train, drop_straddling(train, test, groups)


def split_train_test(
    images: ImageSet,
    method: Literal["flamby", "lesion"] = "flamby",
    test_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[ImageSet, ImageSet]:
    """Split ``images`` into train and test with no lesion on both sides.

    Parameters
    ----------
    images
        The image set; uses the ``lesion_id`` and (for flamby) ``fold`` columns.
    method
        ``"flamby"`` (FLamby fold, lesion-safe) or ``"lesion"`` (our own split).
        ``"flamby"`` falls back to ``"lesion"`` when no image has a fold.
    test_fraction
        Test share for the lesion split (and for images without a fold).
    seed
        Seed of the lesion split.

    Returns
    -------
    tuple of ImageSet
        ``(train, test)``, each in the original image order.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if method not in ("flamby", "lesion"):
        raise ValueError(f"unknown split method {method!r}; use 'flamby' or 'lesion'")
    groups = lesion_groups(images)
    fold = images.meta.get("fold")
    if method == "flamby" and (fold is None or not np.any(fold.astype(str) != "")):
        log.warning("split=flamby but no image has a fold: using the lesion split")
        method = "lesion"
    if method == "flamby":
        train, test = _flamby_masks(images, groups, test_fraction, seed)
    else:
        test = grouped_test_mask(images.labels, groups, test_fraction, seed)
        train = ~test
    log.info("split %s: %d train, %d test", method, int(train.sum()), int(test.sum()))
    return images.subset(np.flatnonzero(train)), images.subset(np.flatnonzero(test))


def validation_split(
    train: ImageSet, fraction: float = 0.2, seed: int = 0
) -> tuple[ImageSet, ImageSet]:
    """Carve a lesion-grouped validation set out of a training set.

    Every step count, weight and preset is chosen on this split, never on the
    test fold. No lesion is on both sides.

    Returns
    -------
    tuple of ImageSet
        ``(fit, validation)``.
    """
    mask = grouped_test_mask(train.labels, lesion_groups(train), fraction, seed)
    return train.subset(~mask), train.subset(mask)
