"""Classification metrics: accuracy, macro precision/recall/F1, confusion matrix, per-class accuracy
(notebook 02 introduces them; notebook 05 scores every model with them).

Thin wrappers around scikit-learn's metrics (tested, well known), with the course's conventions:
the confusion matrix has a row and a column for every class in ``range(num_classes)``; macro
averages are over the classes that occur in ``y_true`` or ``y_pred`` (a class absent from both has
nothing to score, e.g. on a client's local test set that lacks it), and a class that occurs but is
never predicted (or predicted but never occurs) scores 0.
"""
from __future__ import annotations

import numpy as np

from .validate import check_int


def _check(y_true, y_pred, num_classes):
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {y_true.shape[0]} "
                         f"and {y_pred.shape[0]}")
    if y_true.size == 0:
        raise ValueError("y_true and y_pred must not be empty")
    low, high = min(y_true.min(), y_pred.min()), max(y_true.max(), y_pred.max())
    num_classes = int(high) + 1 if num_classes is None else check_int("num_classes", num_classes, low=1)
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must be in 0..{num_classes - 1}, got values from {low} to {high}")
    return y_true, y_pred, num_classes


def confusion(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Confusion matrix: row = true class, column = predicted class."""
    from sklearn.metrics import confusion_matrix

    y_true, y_pred, k = _check(y_true, y_pred, num_classes)
    return confusion_matrix(y_true, y_pred, labels=np.arange(k))


def classification_metrics(y_true, y_pred, num_classes: int | None = None) -> dict:
    """Accuracy and macro-averaged precision, recall and F1 (each class that occurs in
    ``y_true`` or ``y_pred`` weighs the same)."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    y_true, y_pred, k = _check(y_true, y_pred, num_classes)
    present = np.union1d(y_true, y_pred)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=present, average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(y_true, y_pred)), "precision": float(precision),
            "recall": float(recall), "f1": float(f1)}


def per_class_accuracy(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Recall of each class (fraction of its examples predicted correctly); NaN for absent classes."""
    cm = confusion(y_true, y_pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
