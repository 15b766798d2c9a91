"""Every metric against scikit-learn (or a hand computation) on fixed predictions; intervals and calibration on
synthetic data whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    cohen_kappa_score,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
    roc_auc_score,
    top_k_accuracy_score,
)

from medclass.evaluation.bootstrap import bootstrap_intervals, headline_intervals, wilson
from medclass.evaluation.calibration import (
    apply_temperature,
    choose_temperature,
    fit_temperature,
    reliability_curve,
)
from medclass.evaluation.clinical import (
    _weighted_auc,
    _weighted_average_precision,
    per_class_intervals,
    per_class_table,
    resample_weights,
)
from medclass.evaluation.thresholds import decisions_at, operating_threshold, sensitivity_specificity
from medclass.metrics import (
    brier_score,
    column_aucs,
    expected_calibration_error,
    predicted_labels,
    summary_metrics,
)
from medclass.metrics import headline_metrics as classification_metrics

pytestmark = pytest.mark.unit  # needs neither ../shared/data nor training


def multiclass_case(n: int = 300, k: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    scores = rng.dirichlet(np.ones(k), n)
    scores[np.arange(n), y] += rng.random(n)  # informative but imperfect
    return y, scores / scores.sum(axis=1, keepdims=True)


def test_multiclass_summary_matches_scikit_learn() -> None:
    y, scores = multiclass_case()
    pred = scores.argmax(axis=1)
    m = summary_metrics(y, scores, "multiclass")
    assert m["acc"] == pytest.approx(np.mean(pred == y))
    assert m["auc_macro_ovr"] == pytest.approx(roc_auc_score(y, scores, multi_class="ovr", average="macro"))
    assert m["auc_weighted_ovr"] == pytest.approx(roc_auc_score(y, scores, multi_class="ovr", average="weighted"))
    assert m["auc"] == pytest.approx(m["auc_macro_ovr"])  # MedMNIST's AUC is the macro one-vs-rest AUC
    assert m["top3_acc"] == pytest.approx(top_k_accuracy_score(y, scores, k=3))
    assert m["top5_acc"] == pytest.approx(top_k_accuracy_score(y, scores, k=5))
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, pred))


def test_top_k_only_where_there_are_enough_classes() -> None:
    y, scores = multiclass_case(k=4)
    m = summary_metrics(y, scores, "multiclass")
    assert "top3_acc" in m and "top5_acc" not in m
    y, scores = multiclass_case(k=3)
    assert "top3_acc" not in summary_metrics(y, scores, "multiclass")


def test_ordinal_kappa_is_quadratic() -> None:
    y, scores = multiclass_case(k=5)
    pred = scores.argmax(axis=1)
    m = summary_metrics(y, scores, "ordinal")
    assert m["kappa"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))
    assert m["kappa"] != pytest.approx(cohen_kappa_score(y, pred))


def test_binary_summary() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p1 = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1)
    scores = np.stack([1 - p1, p1], axis=1)
    m = summary_metrics(y, scores, "binary")
    pred = (p1 > 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, pred))
    assert "top3_acc" not in m and "auc_macro_ovr" not in m


def test_multilabel_summary_and_per_label_table() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (300, 4))
    scores = np.clip(0.4 * y + 0.6 * rng.random((300, 4)), 0, 1)
    thresholds = np.array([0.5, 0.4, 0.6, 0.5])
    m = summary_metrics(y, scores, "multilabel", thresholds)
    pred = (scores > thresholds).astype(int)
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["f1_weighted"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["mcc"] == pytest.approx(np.mean([matthews_corrcoef(y[:, i], pred[:, i]) for i in range(4)]))
    table = per_class_table(y, scores, pred, "multilabel", ["a", "b", "c", "d"])
    precision, recall, f1, support = precision_recall_fscore_support(y, pred, zero_division=0)
    for i, row in enumerate(table):
        assert row["support"] == support[i]
        assert row["sensitivity"] == pytest.approx(recall[i])
        assert row["ppv"] == pytest.approx(precision[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["auc"] == pytest.approx(roc_auc_score(y[:, i], scores[:, i]))


def test_per_class_table_by_hand() -> None:
    # 3 classes; true [0,0,1,1,2,2], predicted [0,1,1,1,2,0]
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    scores = np.eye(3)[pred] * 0.8 + 0.2 / 3
    rows = {row["class"]: row for row in per_class_table(y, scores, pred, "multiclass", ["a", "b", "c"])}
    # class a: TP 1, FN 1, FP 1, TN 3
    assert rows["a"]["sensitivity"] == pytest.approx(0.5) and rows["a"]["specificity"] == pytest.approx(0.75)
    assert rows["a"]["ppv"] == pytest.approx(0.5) and rows["a"]["npv"] == pytest.approx(0.75)
    # class b: TP 2, FN 0, FP 1, TN 3
    assert rows["b"]["sensitivity"] == 1.0 and rows["b"]["ppv"] == pytest.approx(2 / 3)
    assert rows["b"]["npv"] == 1.0 and rows["b"]["f1"] == pytest.approx(0.8)
    # class c: TP 1, FN 1, FP 0, TN 4
    assert rows["c"]["ppv"] == 1.0 and rows["c"]["specificity"] == 1.0 and rows["c"]["support"] == 2


def test_undefined_values_are_none_not_zero() -> None:
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 0, 0])  # class 1 is never predicted: its PPV is undefined
    scores = np.eye(2)[pred].astype(float)
    rows = per_class_table(y, scores, pred, "multiclass", ["a", "b"])
    assert rows[1]["ppv"] is None and rows[1]["sensitivity"] == 0.0


def test_rank_auc_equals_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 2, (500, 5))
    scores = np.round(rng.random((500, 5)), 1)  # many ties
    expected = [roc_auc_score(truth[:, i], scores[:, i]) for i in range(5)]
    assert column_aucs(truth, scores) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(column_aucs(np.ones((10, 1)), rng.random((10, 1)))[0])


def headline(task: str):
    return lambda t, s: classification_metrics(t, s, task)


def test_bootstrap_contains_the_estimate_narrows_with_more_data_and_is_seeded() -> None:
    widths = []
    for n in (150, 1500):
        y, scores = multiclass_case(n=n, seed=4)
        point = classification_metrics(y, scores, "multiclass")
        intervals = bootstrap_intervals(y, scores, headline("multiclass"), ["acc", "auc"], resamples=300, seed=7)
        assert set(intervals.bounds) == {"acc", "auc"} and not intervals.undefined
        for name, (low, high) in intervals.bounds.items():
            assert low <= point[name] <= high, (name, low, point[name], high)
        widths.append(intervals.bounds["auc"][1] - intervals.bounds["auc"][0])
        again = bootstrap_intervals(y, scores, headline("multiclass"), ["acc", "auc"], resamples=300, seed=7)
        assert again == intervals
    assert widths[1] < widths[0] * 0.6  # ~ 1/sqrt(10) in theory


def test_wilson_intervals_are_honest_at_the_edges() -> None:
    # 0 of 56: the interval the issue names (0 - 6.4%), never 0 - 0%; the same by the textbook formula
    low, high = wilson(0, 56)
    assert low == 0 and high == pytest.approx(0.064, abs=5e-4)
    z = 1.959964
    assert high == pytest.approx(z**2 / (56 + z**2), rel=1e-6)
    assert wilson(56, 56) == pytest.approx((1 - high, 1.0))
    low, high = wilson(30, 60)  # symmetric about one half, inside 0..1
    assert low == pytest.approx(1 - high) and 0.37 < low < 0.38
    assert wilson(0, 0) is None


def test_a_one_class_model_gets_no_zero_width_interval() -> None:
    # A model that answers "1" for every image: sensitivity 1 and specificity 0 exactly, balanced accuracy 0.5 in
    # every resample; the percentile bootstrap gives 1-1, 0-0 and 0.5-0.5 for these. Wilson and "undefined" instead.
    rng = np.random.default_rng(0)
    y = (rng.random(156) < 0.27).astype(int)
    scores = np.column_stack([1 - (p := rng.uniform(0.55, 0.9, 156)), p])
    predicted = predicted_labels(scores, "binary")
    assert predicted.min() == 1
    intervals = headline_intervals(y, scores, "binary", None, 500, 0.95, 0)
    assert intervals.methods["acc"] == "wilson" and intervals.methods["auc"] == "percentile bootstrap"
    correct = int(y.sum())
    assert intervals.bounds["acc"] == pytest.approx(wilson(correct, len(y)))
    assert "balanced_acc" not in intervals.bounds
    assert "every one of the 500 resamples gave 0.5000" in intervals.undefined["balanced_acc"]
    assert intervals.as_json()["balanced_acc"] is None and intervals.as_json()["auc"] is not None
    for low, high in intervals.bounds.values():
        assert high - low > 0.01
    rows = per_class_intervals(y, scores, predicted, "binary", 2, resamples=500)
    negatives, positives = len(y) - y.sum(), y.sum()
    assert rows[1]["sensitivity"] == pytest.approx(wilson(positives, positives))  # 100%: 0.9x - 1
    assert rows[1]["specificity"] == pytest.approx(wilson(0, negatives)) and rows[1]["specificity"][1] > 0.02
    assert rows[0]["sensitivity"][0] == 0 and rows[0]["sensitivity"][1] > 0.02  # class 0 never answered
    assert rows[0]["f1"] is None and "every one of the 500 resamples gave 0.0000" in rows[0]["undefined"]["f1"]
    assert rows[0]["ppv"] is None and "ppv" not in rows[0].get("undefined", {})  # no value, nothing to explain
    for row in rows:
        for bounds in row.values():
            if isinstance(bounds, list):
                assert bounds[1] > bounds[0]


def test_calibration_of_known_models() -> None:
    rng = np.random.default_rng(5)
    n, k, true_temperature = 4000, 4, 2.5
    logits = rng.normal(size=(n, k)) * 3
    probabilities = apply_temperature(logits, "multiclass", true_temperature)  # the data-generating model
    y = np.array([rng.choice(k, p=p) for p in probabilities])
    # The generating model is calibrated; the raw logits are over-confident by the factor 2.5.
    assert expected_calibration_error(y, probabilities, "multiclass") < 0.03
    overconfident = apply_temperature(logits, "multiclass", 1.0)
    assert expected_calibration_error(y, overconfident, "multiclass") > 0.1
    temperature, before, after = fit_temperature(logits, y, "multiclass")
    assert temperature == pytest.approx(true_temperature, rel=0.1) and after < before
    curve = reliability_curve(y, overconfident, "multiclass", bins=10)
    assert curve.counts.sum() == n and np.all(curve.accuracy <= curve.confidence + 0.05)


def noisy_binary_logits(seed: int, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logits = rng.normal(0, 1, (n, 2))
    logits[np.arange(n), y] += rng.normal(1.0, 2.0, n)
    return logits, y


def test_a_temperature_that_helps_is_kept() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3000, 4)) * 3
    y = np.array([rng.choice(4, p=p) for p in apply_temperature(logits, "multiclass", 2.5)])
    chosen = choose_temperature(logits[:1500], y[:1500], logits[1500:], y[1500:], "multiclass")
    assert chosen["applied"] and chosen["temperature"] == chosen["fitted_temperature"] > 2
    assert chosen["val_ece_scaled"] < chosen["val_ece"] and chosen["ece_scaled"] < chosen["ece"]
    assert chosen["warning"] is None and not chosen["worse_on_test"]


def test_a_temperature_that_worsens_validation_ece_is_refused() -> None:
    val_logits, val_y = noisy_binary_logits(19)  # NLL falls with T = 1.63, but ECE rises 0.090 -> 0.107
    test_logits, test_y = noisy_binary_logits(20, n=400)
    chosen = choose_temperature(val_logits, val_y, test_logits, test_y, "binary")
    assert chosen["fitted_temperature"] > 1.5 and chosen["val_nll_scaled"] < chosen["val_nll"]
    assert chosen["val_ece_scaled"] > chosen["val_ece"]
    assert not chosen["applied"] and chosen["temperature"] == 1.0
    assert "raises the validation ECE" in chosen["reason"]
    assert chosen["warning"] is None and not chosen["worse_on_test"], "nothing to warn about what is not applied"


def test_a_temperature_that_worsens_the_test_split_is_reported() -> None:
    # Validation says soften (over-confident there); the test split is under-confident, so softening hurts it.
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(4000, 3)) * 3
    y = np.array([rng.choice(3, p=p) for p in apply_temperature(logits, "multiclass", 2.0)])
    test_y = np.array([rng.choice(3, p=p) for p in apply_temperature(logits, "multiclass", 0.5)])
    chosen = choose_temperature(logits[:2000], y[:2000], logits[2000:], test_y[2000:], "multiclass")
    assert chosen["applied"] and chosen["worse_on_test"] and chosen["ece_scaled"] > chosen["ece"]
    assert "raises the test ECE" in chosen["warning"] and "--calibrated" in chosen["warning"]


def test_per_class_intervals_cover_the_values_and_auc_matches_scikit_learn() -> None:
    y, scores = multiclass_case(n=400, k=4, seed=3)
    predicted = scores.argmax(axis=1)
    table = per_class_table(y, scores, predicted, "multiclass", list("abcd"))
    intervals = per_class_intervals(y, scores, predicted, "multiclass", 4, resamples=500, seed=1)
    assert intervals == per_class_intervals(y, scores, predicted, "multiclass", 4, resamples=500, seed=1)
    for row, bounds in zip(table, intervals, strict=True):
        for column in ("sensitivity", "specificity", "ppv", "npv", "f1", "auc"):
            low, high = bounds[column]
            assert low <= row[column] <= high and high - low < 0.3, (row["class"], column)
        found = round(row["sensitivity"] * row["support"])
        assert bounds["sensitivity"] == pytest.approx(wilson(found, row["support"]))
    weights = resample_weights(400, 4, seed=2)
    truth = (y == 1).astype(int)
    expected = [roc_auc_score(truth, scores[:, 1], sample_weight=w) for w in weights]
    assert _weighted_auc(truth, scores[:, 1], weights) == pytest.approx(expected)
    rounded = np.round(scores[:, 1], 2)  # ties
    expected_ap = [average_precision_score(truth, rounded, sample_weight=w) for w in weights]
    assert _weighted_average_precision(truth, rounded, weights) == pytest.approx(expected_ap)


def test_brier_against_scikit_learn() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 200)
    p1 = rng.random(200)
    assert brier_score(y, np.stack([1 - p1, p1], 1), "binary") == pytest.approx(brier_score_loss(y, p1))
    y3, scores = multiclass_case(n=200, k=3)
    expected = np.mean(np.sum((scores - np.eye(3)[y3]) ** 2, axis=1))
    assert brier_score(y3, scores, "multiclass") == pytest.approx(expected)


def test_operating_points() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    youden = operating_threshold(y, p, "youden")
    assert youden == pytest.approx(0.7)  # sensitivity 3/4, specificity 1 -> J = 0.75 (0.4 gives 1 + 3/4 - 1 too)
    assert sensitivity_specificity(y, p, youden) == (0.75, 1.0)
    strict = operating_threshold(y, p, "sensitivity", target_sensitivity=1.0)
    assert strict == pytest.approx(0.4) and sensitivity_specificity(y, p, strict) == (1.0, 0.75)
    # what the report shows at a threshold: counts, the four proportions with Wilson intervals, and PPV/NPV where
    # positives are rarer than here (Bayes' rule: 0.1 / (0.1 + 0.25 * 0.9) = 0.3077)
    at = decisions_at(y, p, strict, 0.95, prevalence=0.1)
    assert at["counts"] == {"tp": 4, "fp": 1, "fn": 0, "tn": 3}
    assert (at["sensitivity"], at["specificity"], at["ppv"], at["npv"]) == (1.0, 0.75, 0.8, 1.0)
    low, high = at["sensitivity_ci"]
    assert low == pytest.approx(0.5101, abs=1e-3) and high == pytest.approx(1.0), "Wilson for 4 of 4, not 1 - 1"
    stated = at["at_prevalence"]
    assert stated["ppv"] == pytest.approx(0.1 / (0.1 + 0.25 * 0.9)) and stated["npv"] == pytest.approx(1.0)
    assert stated["ppv_ci"][0] < stated["ppv"] < stated["ppv_ci"][1]
    assert decisions_at(np.zeros(4), p[:4], 0.5, 0.95)["sensitivity"] is None  # no positives: undefined, not 0
    assert predicted_labels(np.stack([1 - p, p], 1), "binary").tolist() == [0, 0, 0, 1, 0, 1, 1, 1]
