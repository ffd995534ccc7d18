"""Metrics against cases computed by hand."""
import numpy as np
import pytest

from data_utils import metrics as M

# y_true 0 0 1 1 2 2, y_pred 0 1 1 1 0 2
#            pred 0  pred 1  pred 2
# true 0       1       1       0
# true 1       0       2       0
# true 2       1       0       1
Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 0, 2]


def test_confusion_by_hand():
    np.testing.assert_array_equal(M.confusion(Y_TRUE, Y_PRED, 3), [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    # an extra class gets an empty row and column
    cm = M.confusion(Y_TRUE, Y_PRED, 4)
    assert cm.shape == (4, 4) and cm[3].sum() == 0 and cm[:, 3].sum() == 0


def test_classification_metrics_by_hand():
    got = M.classification_metrics(Y_TRUE, Y_PRED, 3)
    # precision per class: 1/2, 2/3, 1/1; recall: 1/2, 2/2, 1/2
    # F1 per class: 0.5, 2*(2/3)*1/(5/3) = 0.8, 2*1*0.5/1.5 = 2/3
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert got["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert got["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)


def test_class_never_predicted_scores_zero():
    # class 2 occurs twice and is never predicted: precision 0 (nothing predicted), recall 0
    got = M.classification_metrics([0, 1, 2, 2], [0, 1, 0, 1], 3)
    # precision: class 0 1/2, class 1 1/2, class 2 0; recall: 1, 1, 0
    assert got["accuracy"] == pytest.approx(0.5)
    assert got["precision"] == pytest.approx((0.5 + 0.5 + 0) / 3)
    assert got["recall"] == pytest.approx((1 + 1 + 0) / 3)
    assert got["f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_class_absent_from_both_is_not_averaged():
    # a local test set with only classes 0 and 1 out of 10: the 8 absent classes do not count
    got = M.classification_metrics([0, 0, 1, 1], [0, 0, 1, 1], 10)
    assert got == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    # but a predicted class that does not occur does count (precision 0, recall 0)
    got = M.classification_metrics([0, 0, 1, 1], [0, 0, 1, 5], 10)
    assert got["precision"] == pytest.approx((1 + 1 + 0) / 3)
    assert got["recall"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_perfect_and_per_class_accuracy():
    assert M.classification_metrics([2, 1, 0], [2, 1, 0])["f1"] == 1.0
    np.testing.assert_allclose(M.per_class_accuracy(Y_TRUE, Y_PRED, 4), [0.5, 1.0, 0.5, np.nan])


def test_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        M.classification_metrics([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        M.confusion([], [])
    with pytest.raises(ValueError, match="0..2"):
        M.confusion([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="0..2"):
        M.confusion([0, -1], [0, 1], 3)
