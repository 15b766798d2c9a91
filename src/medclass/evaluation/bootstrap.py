"""Bootstrap confidence intervals for metrics computed from a split's predictions (scipy.stats.bootstrap).

Images are resampled with replacement (all metrics of one resample see the same images), with a seeded generator,
so the intervals are reproducible. The percentile method is used: BCa would need one jackknife evaluation per
image, far too slow for test splits of thousands of images."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
from scipy.stats import bootstrap

MetricsFunction = Callable[[np.ndarray, np.ndarray], dict[str, float]]


def bootstrap_intervals(
    y_true: np.ndarray,
    y_score: np.ndarray,
    metrics: MetricsFunction,
    names: list[str],
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """``{name: (low, high)}`` for each of ``names`` that ``metrics(y_true, y_score)`` returns."""
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
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    # scipy's percentile interval is NaN as soon as one resample's metric is undefined (a small split's resample
    # without one class has no AUC); the interval of the resamples where it exists is kept when that is nearly all
    # of them (90%, as for the per-class intervals), which equals scipy's when every resample has a value.
    distribution = np.atleast_2d(result.bootstrap_distribution)
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for name, values in zip(names, distribution, strict=True):
        finite = values[np.isfinite(values)]
        if len(finite) >= 0.9 * resamples:
            intervals[name] = (float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail)))
        else:
            intervals[name] = (float("nan"), float("nan"))
    return intervals
