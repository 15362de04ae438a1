"""Classification metrics of a trained classifier on a real test set."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)
from torch import nn

from .data.imageset import ImageSet
from .models.classifiers import classifier_logits
from .wire import Metric


@dataclass(frozen=True)
class ClassificationMetrics:
    """Macro one-vs-rest AUC, accuracy and balanced accuracy on ``n`` images."""

    auc: float
    acc: float
    bal_acc: float
    n: int

    def as_dict(self) -> dict[str, float]:
        """Plain dict with the field names (JSON)."""
        return asdict(self)

    def as_record(self) -> dict[str, float]:
        """Kebab-case names, as metrics travel in Flower records and the run store."""
        return {
            Metric.AUC: self.auc,
            Metric.ACC: self.acc,
            Metric.BAL_ACC: self.bal_acc,
            Metric.NUM_EXAMPLES: self.n,
        }


@torch.no_grad()
def predict_proba(
    model: nn.Module, images: ImageSet, batch_size: int = 256
) -> np.ndarray:
    """Softmax class probabilities, N × num_classes."""
    model.eval()
    device = next(model.parameters()).device
    x, _ = images.to_tensors()
    out = [
        torch.softmax(classifier_logits(model, b.to(device)), dim=1).cpu()
        for b in x.split(batch_size)
    ]
    return torch.cat(out).numpy()


def macro_ovr_auc(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Mean one-vs-rest ROC AUC over the classes with both positives and negatives.

    Classes absent from the test labels have no defined AUC and are left out
    (the site test folds of ISIC lack some classes).
    """
    aucs = []
    for k in range(proba.shape[1]):
        positives = y_true == k
        if 0 < positives.sum() < len(y_true):
            aucs.append(roc_auc_score(positives, proba[:, k]))
    return float(np.mean(aucs)) if aucs else float("nan")


def classification_metrics(
    y_true: np.ndarray, proba: np.ndarray
) -> ClassificationMetrics:
    """Metrics from true labels and predicted probabilities."""
    pred = proba.argmax(axis=1)
    return ClassificationMetrics(
        auc=macro_ovr_auc(y_true, proba),
        acc=float(accuracy_score(y_true, pred)),
        bal_acc=float(balanced_accuracy_score(y_true, pred)),
        n=int(len(y_true)),
    )


def per_class_report(
    y_true: np.ndarray, proba: np.ndarray, class_names: list[str]
) -> dict:
    """Per-class AUC, recall, precision and support, and the confusion matrix.

    JSON-ready: ``{"class_names", "per_class": {name: {auc, recall, precision,
    support}}, "confusion": rows = true class, columns = predicted}``. A class
    without test positives has AUC, recall and precision ``None`` (undefined),
    not 0.
    """
    labels = np.arange(len(class_names))
    pred = proba.argmax(axis=1)
    precision, recall, _, support = precision_recall_fscore_support(
        y_true, pred, labels=labels, zero_division=np.nan
    )
    per_class = {}
    for k, name in enumerate(class_names):
        positives = y_true == k
        defined = 0 < positives.sum() < len(y_true)
        per_class[name] = {
            "auc": float(roc_auc_score(positives, proba[:, k])) if defined else None,
            "recall": float(recall[k]) if support[k] else None,
            "precision": None if np.isnan(precision[k]) else float(precision[k]),
            "support": int(support[k]),
        }
    return {
        "class_names": list(class_names),
        "per_class": per_class,
        "confusion": confusion_matrix(y_true, pred, labels=labels).tolist(),
    }


def evaluate_classifier(model: nn.Module, test: ImageSet) -> ClassificationMetrics:
    """Evaluate ``model`` on a real test set."""
    if len(test) == 0:
        raise ValueError("the test set is empty")
    return classification_metrics(test.labels, predict_proba(model, test))
