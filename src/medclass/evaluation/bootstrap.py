"""Confidence intervals that never claim certainty.

Proportions (accuracy of a single-label task, and per class sensitivity, specificity, PPV, NPV: the parts of
balanced accuracy) get Wilson score intervals from their counts. Wilson rather than Clopper-Pearson: both are
honest at the edges (0 of 56 gives 0 - 6.4% with either), but Clopper-Pearson's guaranteed coverage makes it wider
than 95% everywhere else (it covers 97-99% at these sizes), and Wilson's coverage stays close to the nominal 95% for
every n and p (Brown, Cai and DasGupta, Statistical Science 2001). scipy computes both (``binomtest``).

Everything else (AUC, AP, F1, kappa, balanced accuracy as a whole, differences between runs) gets a percentile
bootstrap (scipy.stats.bootstrap): images resampled with replacement, all metrics of one resample seeing the same
images, a seeded generator, so the intervals are reproducible. BCa would need one jackknife evaluation per image, far
too slow for test splits of thousands of images. When the resamples cannot describe the uncertainty (every resample,
or the middle 95% of them, gives one value: a model that answers one class for every image; or too few resamples
have a value) the interval is undefined, with the reason, never a zero-width range that reads as proven."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import binomtest, bootstrap

from medclass.metrics import METRICS, headline_metrics, predicted_labels

MetricsFunction = Callable[[np.ndarray, np.ndarray], dict[str, float]]
WILSON = "wilson"
BOOTSTRAP = "percentile bootstrap"
ENOUGH = 0.9  # share of resamples that must have a value for their percentiles to describe this split


@dataclass
class Intervals:
    """Intervals of named values: ``bounds`` where one exists, ``undefined`` (name -> why) where none does, and the
    method of each (``methods``)."""

    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)

    def set(self, name: str, bounds: tuple[float, float] | None, method: str, reason: str = "") -> None:
        self.methods[name] = method
        if bounds is None:
            self.bounds.pop(name, None)
            self.undefined[name] = reason
        else:
            self.bounds[name] = bounds
            self.undefined.pop(name, None)

    def as_json(self) -> dict[str, list[float] | None]:
        """``{name: [low, high] or None}`` (None: undefined, see ``undefined`` for why)."""
        return {name: (list(self.bounds[name]) if name in self.bounds else None) for name in self.methods}


def wilson(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of ``successes`` of ``total``; None when there is nothing to count (total 0)."""
    if total <= 0:
        return None
    ci = binomtest(int(successes), int(total)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(max(ci.low, 0.0)), float(min(ci.high, 1.0))


def percentile_interval(
    values: np.ndarray, resamples: int, confidence: float
) -> tuple[tuple[float, float] | None, str]:
    """(bounds, "") from one value's bootstrap distribution, or (None, why) when they would claim what the resamples
    cannot show: too few resamples have a value, or the interval has no width."""
    finite = values[np.isfinite(values)]
    if len(finite) < ENOUGH * resamples:
        return None, (
            f"only {len(finite)} of {resamples} resamples have a value (a class is too rare in this split), so the "
            "resamples describe other data"
        )
    tail = 100 * (1 - confidence) / 2
    low, high = float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))
    if high - low <= 1e-12:
        share = "every one" if np.ptp(finite) == 0 else f"the middle {round(100 * confidence)}%"
        return None, (
            f"{share} of the {len(finite)} resamples gave {low:.4f} (as a model that answers one class for every "
            "image does), so resampling these images cannot say how uncertain it is; a zero-width range would read "
            "as proven"
        )
    return (low, high), ""


def bootstrap_intervals(
    y_true: np.ndarray,
    y_score: np.ndarray,
    metrics: MetricsFunction,
    names: list[str],
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Intervals:
    """Percentile bootstrap intervals of each of ``names`` that ``metrics(y_true, y_score)`` returns."""
    distribution = bootstrap_distribution(y_true, y_score, metrics, names, resamples, seed)
    intervals = Intervals()
    for name, values in zip(names, distribution, strict=True):
        bounds, reason = percentile_interval(values, resamples, confidence)
        intervals.set(name, bounds, BOOTSTRAP, reason)
    return intervals


def bootstrap_distribution(
    y_true: np.ndarray, y_score: np.ndarray, metrics: MetricsFunction, names: list[str], resamples: int, seed: int
) -> np.ndarray:
    """(len(names), resamples): each metric on each bootstrap resample of the images (NaN where undefined)."""
    y_true, y_score = np.asarray(y_true), np.asarray(y_score)

    def statistic(index: np.ndarray) -> np.ndarray:
        values = metrics(y_true[index], y_score[index])
        return np.array([values.get(name, np.nan) for name in names], dtype=np.float64)

    with warnings.catch_warnings():
        # A resample that misses a class warns in scikit-learn; the metric functions already handle it.
        warnings.simplefilter("ignore")
        result = bootstrap(
            (np.arange(len(y_true)),),
            statistic,
            vectorized=False,
            n_resamples=resamples,
            confidence_level=0.95,  # scipy's own interval is not used
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    # scipy's own interval is NaN as soon as one resample's metric is undefined (a small split's resample without
    # one class has no AUC): percentile_interval uses the resamples where it exists when that is nearly all.
    return np.atleast_2d(result.bootstrap_distribution)


def headline_intervals(
    y_true: np.ndarray, y_score: np.ndarray, task: str, thresholds: np.ndarray | None, resamples: int,
    confidence: float, seed: int,
) -> Intervals:  # fmt: skip
    """Intervals of the headline metrics: bootstrap for each, then Wilson for accuracy where it is one proportion
    (single-label tasks: correct decisions of all images)."""
    names = list(METRICS.names("headline"))
    intervals = bootstrap_intervals(
        y_true, y_score, lambda t, s: headline_metrics(t, s, task, thresholds), names, resamples, confidence, seed
    )
    if "acc" in names and task != "multilabel" and len(y_true):
        correct = int((predicted_labels(np.asarray(y_score), task) == np.asarray(y_true).reshape(-1)).sum())
        intervals.set("acc", wilson(correct, len(y_true), confidence), WILSON)
    return intervals
