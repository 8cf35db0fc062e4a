"""Metrics from the confusion matrix, checked by hand and against scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as skm

from bflsim.metrics import class_report, confusion_matrix, summary_metrics


def test_hand_computed_three_class_case():
    # class 0 = normal. true/pred pairs: 0->0 x3, 0->1 x1, 1->1 x2, 2->0 x1, 2->2 x1
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 0, 2])

    cm = confusion_matrix(y_true, y_pred, 3)
    summary = summary_metrics(cm, normal_class=0)
    report = class_report(cm)

    assert cm.tolist() == [[3, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert summary["accuracy"] == pytest.approx(6 / 8)
    # precision: 3/4, 2/3, 1/1; recall: 3/4, 2/2, 1/2
    assert report.precision == pytest.approx([0.75, 2 / 3, 1.0])
    assert report.recall == pytest.approx([0.75, 1.0, 0.5])
    # normal flows flagged as attacks: 1 of 4; attacks detected as any attack: 3 of 4
    assert summary["fpr"] == pytest.approx(0.25)
    assert summary["detection_rate"] == pytest.approx(0.75)
    # per-class FPR of class 1: FP=1, TN = 8 - 2 (actual) - 1 (FP) = 5
    assert report.fpr[1] == pytest.approx(1 / 6)


def test_agrees_with_scikit_learn_on_random_labels():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 5, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 5, 500))

    cm = confusion_matrix(y_true, y_pred, 5)
    summary = summary_metrics(cm, normal_class=None)

    assert np.array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=range(5)))
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        assert summary[f"precision_{average}"] == pytest.approx(p)
        assert summary[f"recall_{average}"] == pytest.approx(r)
        assert summary[f"f1_{average}"] == pytest.approx(f)
    assert "fpr" not in summary


def test_a_class_never_predicted_scores_zero_not_nan():
    cm = confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 0]), 2)

    report = class_report(cm)

    assert report.precision[1] == 0.0 and report.f1[1] == 0.0
    assert not np.isnan(report.f1).any()


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(np.zeros(3), np.zeros(4), 2)
