"""Per-class report of a classifier: hand-computed labels and probabilities."""

import numpy as np
import pytest

from medsynth_fl.evaluation import classification_metrics, per_class_report

NAMES = ["MEL", "NV", "BCC", "AK"]  # AK has no test image


def test_per_class_report_by_hand():
    y = np.array([0, 0, 1, 1, 1, 2])
    proba = np.array(
        [
            [0.7, 0.2, 0.1, 0.0],  # MEL → MEL
            [0.2, 0.7, 0.1, 0.0],  # MEL → NV
            [0.1, 0.8, 0.1, 0.0],  # NV → NV
            [0.1, 0.6, 0.3, 0.0],  # NV → NV
            [0.6, 0.3, 0.1, 0.0],  # NV → MEL
            [0.1, 0.1, 0.8, 0.0],  # BCC → BCC
        ]
    )
    report = per_class_report(y, proba, NAMES)
    assert report["confusion"] == [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0] * 4]
    mel, nv, bcc, ak = (report["per_class"][c] for c in NAMES)
    assert (mel["recall"], mel["precision"], mel["support"]) == (0.5, 0.5, 2)
    assert nv["recall"] == pytest.approx(2 / 3) and nv["precision"] == pytest.approx(
        2 / 3
    )
    assert bcc == {"auc": 1.0, "recall": 1.0, "precision": 1.0, "support": 1}
    assert ak == {"auc": None, "recall": None, "precision": None, "support": 0}
    # MEL one-vs-rest: scores .7 .2 vs .1 .1 .6 .1 → 7 of 8 pairs ranked right
    assert mel["auc"] == pytest.approx(7 / 8)
    # balanced accuracy is the mean recall over the classes that have images
    summary = classification_metrics(y, proba)
    assert summary.bal_acc == pytest.approx(np.mean([0.5, 2 / 3, 1.0]))
