"""ACC/AUC must equal MedMNIST's evaluator (hand-computed cases and the medmnist package itself)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from medmnist.evaluator import getACC, getAUC
from sklearn.metrics import balanced_accuracy_score, f1_score

from medclass.metrics import headline_metrics as classification_metrics
from medclass.metrics import medmnist_acc, medmnist_auc, predicted_labels

pytestmark = pytest.mark.unit  # needs neither ../shared/data nor training

MEDMNIST_TASK = {"binary": "binary-class", "multiclass": "multi-class", "ordinal": "ordinal-regression",
                 "multilabel": "multi-label, binary-class"}  # fmt: skip


def test_binary_by_hand() -> None:
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    scores = np.stack([1 - p1, p1], axis=1)
    # Pairs (positive, negative): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3/4. Predictions [0,0,0,1] -> 3/4 right.
    assert medmnist_auc(y, scores, "binary") == pytest.approx(0.75)
    assert medmnist_acc(y, scores, "binary") == pytest.approx(0.75)


def test_multiclass_by_hand() -> None:
    y = np.array([0, 1, 2, 2])
    scores = np.array([[0.7, 0.2, 0.1], [0.3, 0.4, 0.3], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    # One-vs-rest: class 0 -> 1, class 1 -> 2/3, class 2 -> (1 + 0.5 + 1 + 1) / 4 = 0.875 (a tie counts half).
    assert medmnist_auc(y, scores, "multiclass") == pytest.approx((1 + 2 / 3 + 0.875) / 3)
    assert medmnist_acc(y, scores, "multiclass") == pytest.approx(0.75)  # argmax [0, 1, 1, 2]
    assert medmnist_auc(y, scores, "ordinal") == medmnist_auc(y, scores, "multiclass")


def test_multilabel_by_hand() -> None:
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    scores = np.array([[0.9, 0.2], [0.3, 0.6], [0.6, 0.4], [0.2, 0.7]])
    # Label 0 separates perfectly (AUC 1, ACC 1); label 1: AUC 2/4, predictions [0,1,0,1] vs [0,1,1,0] -> ACC 1/2.
    assert medmnist_auc(y, scores, "multilabel") == pytest.approx(0.75)
    assert medmnist_acc(y, scores, "multilabel") == pytest.approx(0.75)


@pytest.mark.parametrize("task", ["binary", "multiclass", "ordinal", "multilabel"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identical_to_the_medmnist_package(task: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, k = 200, {"binary": 2, "multiclass": 8, "ordinal": 5, "multilabel": 14}[task]
    if task == "multilabel":
        y = rng.integers(0, 2, (n, k))
        scores = rng.random((n, k))
    else:
        y = rng.integers(0, k, (n, 1))  # MedMNIST's (N, 1) label layout
        scores = rng.dirichlet(np.ones(k), n)
    medmnist_task = MEDMNIST_TASK[task]
    assert medmnist_auc(y, scores, task) == pytest.approx(getAUC(y, scores, medmnist_task), abs=1e-12)
    assert medmnist_acc(y, scores, task) == pytest.approx(getACC(y, scores, medmnist_task), abs=1e-12)


def test_absent_class_is_left_out_of_the_auc_average() -> None:
    y = np.array([0, 0, 1, 1])  # class 2 never occurs: its one-vs-rest AUC is undefined
    scores = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    assert medmnist_auc(y, scores, "multiclass") == pytest.approx(1.0)
    assert np.isnan(medmnist_auc(np.zeros(4, int), scores[:, :2], "binary"))


def test_headline_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, 300)
    scores = rng.dirichlet(np.ones(4), 300)
    metrics = classification_metrics(y, scores, "multiclass")
    pred = scores.argmax(1)
    assert metrics["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert metrics["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert set(metrics) == {"acc", "auc", "f1_macro", "balanced_acc"}


def test_multilabel_headline_metrics() -> None:
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    scores = np.array([[0.9, 0.2], [0.3, 0.6], [0.6, 0.4], [0.2, 0.7]])
    metrics = classification_metrics(y, scores, "multilabel")
    pred = (scores > 0.5).astype(int)
    assert metrics["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert metrics["balanced_acc"] == pytest.approx((1.0 + 0.5) / 2)


def test_per_label_thresholds_are_chosen_by_f1() -> None:
    from medclass.evaluation.thresholds import best_f1_thresholds

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 3))
    scores = np.clip(y * 0.3 + rng.random((400, 3)) * 0.25, 0, 1)  # positives sit in 0.30..0.55, negatives below 0.25
    scores[:, 2] = rng.random(400)  # an uninformative label
    thresholds = best_f1_thresholds(y, scores)
    assert 0.25 <= thresholds[0] <= 0.31 and 0.25 <= thresholds[1] <= 0.31
    assert (
        classification_metrics(y, scores, "multilabel", thresholds)["f1_macro"]
        > classification_metrics(y, scores, "multilabel")["f1_macro"]
    )
    assert best_f1_thresholds(np.zeros((5, 1), int), np.random.rand(5, 1))[0] == 0.5


@pytest.mark.parametrize("seed", range(6))
def test_fast_f1_and_balanced_accuracy_equal_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 9))
    n = int(rng.integers(5, 200))
    y = rng.integers(0, k, n)
    y[: n // 3] = 0  # imbalance; small n also leaves classes absent from truth or predictions
    scores = rng.dirichlet(np.ones(k) * 0.3, n)
    pred = scores.argmax(1)
    task = "binary" if k == 2 else "multiclass"
    pred = predicted_labels(scores, task)
    metrics = classification_metrics(y, scores, task)
    expected_f1 = f1_score(y, pred, labels=np.arange(k), average="macro", zero_division=0)
    assert metrics["f1_macro"] == pytest.approx(expected_f1, abs=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about classes predicted but absent
        assert metrics["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-12)
    labels = rng.integers(0, 2, (n, k))
    labels[:, 0] = 0  # a label without positives
    label_scores = rng.random((n, k))
    label_pred = (label_scores > 0.5).astype(int)
    metrics = classification_metrics(labels, label_scores, "multilabel")
    assert metrics["f1_macro"] == pytest.approx(f1_score(labels, label_pred, average="macro", zero_division=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.mean([balanced_accuracy_score(labels[:, i], label_pred[:, i]) for i in range(k)])
    assert metrics["balanced_acc"] == pytest.approx(expected, abs=1e-12)
