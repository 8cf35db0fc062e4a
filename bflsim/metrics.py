"""Classification metrics for intrusion detection, from the confusion matrix alone.

Every number here is a function of the confusion matrix ``C`` (rows: true class, columns:
predicted class), so the tables and the audit can recompute them from stored counts.

- precision_c = C[c, c] / sum_k C[k, c], recall_c = C[c, c] / sum_k C[c, k],
  F1_c = 2 P R / (P + R); a zero denominator gives 0 (scikit-learn's ``zero_division=0``).
- macro = unweighted mean over classes; weighted = mean weighted by true-class support.
- per-class false-positive rate: FP_c / (FP_c + TN_c).
- attack-vs-normal false-positive rate: the share of normal traffic flagged as any attack,
  the figure an operator feels as false alarms.

The attack success rate of a targeted or backdoor attack (:func:`attack_success_rate`) is
the one figure here not read from the confusion matrix: it is measured on the attack's own
test rows (:meth:`bflsim.attacks.Attack.success_inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ClassReport:
    """Per-class precision, recall, F1, false-positive rate and support."""

    precision: NDArray[np.float64]
    recall: NDArray[np.float64]
    f1: NDArray[np.float64]
    fpr: NDArray[np.float64]
    support: NDArray[np.int64]


def confusion_matrix(y_true: NDArray, y_pred: NDArray, num_classes: int) -> NDArray[np.int64]:
    """Counts of (true, predicted) pairs as a (num_classes, num_classes) matrix."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in shape: {y_true.shape} vs {y_pred.shape}")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def class_report(cm: NDArray[np.int64]) -> ClassReport:
    """Per-class scores from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    fp = predicted - tp
    tn = cm.sum() - actual - fp
    precision = _safe_divide(tp, predicted)
    recall = _safe_divide(tp, actual)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return ClassReport(precision, recall, f1, _safe_divide(fp, fp + tn), actual.astype(np.int64))


def summary_metrics(cm: NDArray[np.int64], normal_class: int | None) -> dict[str, float]:
    """Accuracy, macro/weighted precision-recall-F1 and false-positive rates."""
    report = class_report(cm)
    total = cm.sum()
    weights = report.support / max(total, 1)
    metrics = {
        "accuracy": float(np.trace(cm) / total) if total else 0.0,
        "precision_macro": float(report.precision.mean()),
        "recall_macro": float(report.recall.mean()),
        "f1_macro": float(report.f1.mean()),
        "precision_weighted": float(report.precision @ weights),
        "recall_weighted": float(report.recall @ weights),
        "f1_weighted": float(report.f1 @ weights),
        "fpr_macro": float(report.fpr.mean()),
    }
    if normal_class is not None:
        metrics["fpr"] = attack_false_positive_rate(cm, normal_class)
        metrics["detection_rate"] = attack_detection_rate(cm, normal_class)
    return metrics


def attack_false_positive_rate(cm: NDArray[np.int64], normal_class: int) -> float:
    """Share of normal samples predicted as any attack class."""
    normal = cm[normal_class].sum()
    return float((normal - cm[normal_class, normal_class]) / normal) if normal else 0.0


def attack_detection_rate(cm: NDArray[np.int64], normal_class: int) -> float:
    """Share of attack samples predicted as any attack class (binary recall of 'attack')."""
    attack_rows = np.delete(cm, normal_class, axis=0)
    attacks = attack_rows.sum()
    return float((attacks - attack_rows[:, normal_class].sum()) / attacks) if attacks else 0.0


def attack_success_rate(predictions: NDArray, target: int) -> float:
    """The share of ``predictions`` equal to ``target``: the attack success rate (ASR) on the
    rows an attack's success is measured on.

    ``predictions`` are class indices (n,) or class probabilities (n, C), read as their argmax.
    No rows is an error, not a rate.
    """
    predicted = np.asarray(predictions)
    if predicted.ndim == 2:
        predicted = np.argmax(predicted, axis=1)
    if predicted.ndim != 1:
        raise ValueError(f"predictions must be class indices (n,) or probabilities (n, C); got shape {predicted.shape}")
    if len(predicted) == 0:
        raise ValueError(f"attack_success_rate: no predictions to measure target class {target} on (0 rows)")
    return float(np.mean(predicted == target))


def _safe_divide(num: NDArray, den: NDArray) -> NDArray[np.float64]:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def score_probabilities(
    proba: NDArray, y_true: NDArray, num_classes: int, normal_class: int | None
) -> tuple[dict[str, float], NDArray[np.int64]]:
    """Summary metrics, the mean cross-entropy (``loss``) and the confusion matrix of class
    probabilities ``proba`` (n, C) against the true labels."""
    cm = confusion_matrix(y_true, np.argmax(proba, axis=1), num_classes)
    metrics = summary_metrics(cm, normal_class)
    picked = proba[np.arange(len(y_true)), y_true]
    metrics["loss"] = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    return metrics, cm
