"""External validation, the numbers: a model's results on an external set next to its internal test results, each
with its interval and the difference with its interval; calibration on the external set (ECE, calibration
intercept and slope); the operating threshold chosen on validation applied to both. The scoring (which model, which
images, duplicates, the gate) is in medclass.inference.external; this module only computes and renders.

Differences of proportions (accuracy, sensitivity, specificity, PPV, NPV) get Newcombe's hybrid score interval,
built from the two Wilson intervals (Newcombe, Statistics in Medicine 1998, method 10); the other metrics get a
percentile bootstrap of the difference, the internal and the external images resampled independently (they are
different images). An interval that the resamples cannot give is undefined, with the reason."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from scipy.optimize import minimize, minimize_scalar

from medclass.evaluation.bootstrap import (
    BOOTSTRAP,
    WILSON,
    bootstrap_distribution,
    percentile_interval,
    wilson,
)
from medclass.evaluation.subgroups import gap_sentence
from medclass.evaluation.thresholds import decision_counts
from medclass.io import atomic_write_text, png_data_uri
from medclass.metrics import METRICS, expected_calibration_error, headline_metrics, metric_label, predicted_labels
from medclass.metrics.base import decide_positive
from medclass.run_dir import ExternalDir
from medclass.wording import class_name, interval_text, plural

NEWCOMBE = "newcombe (from the two wilson intervals)"


@dataclass
class Scored:
    """One set's labels (model class indices) and probabilities."""

    targets: np.ndarray
    scores: np.ndarray
    task: str

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Proportion:
    """k of n with its Wilson interval."""

    k: int
    n: int
    bounds: tuple[float, float] | None

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None


def proportion(k: int, n: int, confidence: float) -> Proportion:
    return Proportion(int(k), int(n), wilson(k, n, confidence))


def newcombe(first: Proportion, second: Proportion) -> tuple[float, float] | None:
    """Interval of second - first (two independent proportions) from their Wilson intervals."""
    if first.bounds is None or second.bounds is None or first.value is None or second.value is None:
        return None
    (l1, u1), (l2, u2) = first.bounds, second.bounds
    d = second.value - first.value
    return (d - math.sqrt((second.value - l2) ** 2 + (u1 - first.value) ** 2),
            d + math.sqrt((u2 - second.value) ** 2 + (first.value - l1) ** 2))  # fmt: skip


def binary_proportions(scored: Scored, positive: int, threshold: float, confidence: float) -> dict[str, Proportion]:
    """Sensitivity, specificity, PPV and NPV for class ``positive`` at P(positive) > ``threshold``."""
    truth = np.asarray(scored.targets).reshape(-1) == positive
    c = decision_counts(truth, decide_positive(scored.scores[:, positive], threshold))
    return {
        "sensitivity": proportion(c["tp"], c["tp"] + c["fn"], confidence),
        "specificity": proportion(c["tn"], c["tn"] + c["fp"], confidence),
        "ppv": proportion(c["tp"], c["tp"] + c["fp"], confidence),
        "npv": proportion(c["tn"], c["tn"] + c["fn"], confidence),
    }


def accuracy(scored: Scored, confidence: float) -> Proportion | None:
    if scored.task == "multilabel":
        return None
    correct = predicted_labels(scored.scores, scored.task) == np.asarray(scored.targets).reshape(-1)
    return proportion(int(correct.sum()), len(correct), confidence)


@dataclass
class Row:
    """One line of the side-by-side table."""

    key: str
    label: str
    internal: float | None
    internal_ci: tuple[float, float] | None
    external: float | None
    external_ci: tuple[float, float] | None
    difference: float | None = None
    difference_ci: tuple[float, float] | None = None
    method: str = ""
    undefined: dict[str, str] = field(default_factory=dict)  # internal / external / difference -> why no interval
    counts: str = ""  # "k/n vs k/n" for proportions

    def as_dict(self) -> dict[str, Any]:
        def rounded(value: Any) -> Any:
            if value is None:
                return None
            if isinstance(value, tuple | list):
                return [round(float(v), 6) for v in value]
            return round(float(value), 6)

        return {"key": self.key, "label": self.label, "internal": rounded(self.internal),
                "internal_ci": rounded(self.internal_ci), "external": rounded(self.external),
                "external_ci": rounded(self.external_ci), "difference": rounded(self.difference),
                "difference_ci": rounded(self.difference_ci), "method": self.method, "counts": self.counts,
                **({"undefined": self.undefined} if self.undefined else {})}  # fmt: skip


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and np.isfinite(value) else None


def proportion_row(key: str, label: str, internal: Proportion | None, external: Proportion) -> Row:
    row = Row(key, label, internal.value if internal else None, internal.bounds if internal else None,
              external.value, external.bounds, method=f"{WILSON}; difference: {NEWCOMBE}")  # fmt: skip
    row.counts = (f"{internal.k}/{internal.n} vs " if internal else "") + f"{external.k}/{external.n}"
    if internal is not None and internal.value is not None and external.value is not None:
        row.difference = external.value - internal.value
        row.difference_ci = newcombe(internal, external)
    return row


def compare_sets(
    internal: Scored | None, external: Scored, classes: list[str], positive: int | None, threshold: float | None,
    resamples: int, confidence: float, seed: int,
) -> list[Row]:  # fmt: skip
    """The side-by-side rows: headline metrics, then for binary tasks the positive class at 0.5 and at the
    validation threshold; differences are external minus internal."""
    rows: list[Row] = []
    names = list(METRICS.names("headline"))
    task = external.task

    def metrics(t: np.ndarray, s: np.ndarray) -> dict[str, float]:
        return headline_metrics(t, s, task)

    ext_point = metrics(external.targets, external.scores)
    ext_dist = bootstrap_distribution(external.targets, external.scores, metrics, names, resamples, seed)
    int_point = metrics(internal.targets, internal.scores) if internal is not None else {}
    int_dist = (bootstrap_distribution(internal.targets, internal.scores, metrics, names, resamples, seed + 1)
                if internal is not None else None)  # fmt: skip
    for k, name in enumerate(names):
        if name == "acc" and task != "multilabel":
            ext_acc = accuracy(external, confidence)
            assert ext_acc is not None
            rows.append(proportion_row(name, metric_label(name), accuracy(internal, confidence) if internal else None,
                                       ext_acc))  # fmt: skip
            continue
        row = Row(name, metric_label(name), _finite(int_point.get(name)), None, _finite(ext_point.get(name)), None,
                  method=f"{BOOTSTRAP}; difference: bootstrap of both sets, resampled independently")  # fmt: skip
        row.external_ci, why = percentile_interval(ext_dist[k], resamples, confidence)
        if row.external_ci is None and row.external is not None:
            row.undefined["external"] = why
        if int_dist is not None:
            row.internal_ci, why = percentile_interval(int_dist[k], resamples, confidence)
            if row.internal_ci is None and row.internal is not None:
                row.undefined["internal"] = why
            if row.internal is not None and row.external is not None:
                row.difference = row.external - row.internal
                row.difference_ci, why = percentile_interval(ext_dist[k] - int_dist[k], resamples, confidence)
                if row.difference_ci is None:
                    row.undefined["difference"] = why
        rows.append(row)
    if positive is not None:
        name = class_name(classes[positive])
        cuts = [(0.5, "at 0.5")] + ([(threshold, f"at {threshold:.2f}, the validation threshold")]
                                    if threshold is not None else [])  # fmt: skip
        for cut, said in cuts:
            ext = binary_proportions(external, positive, cut, confidence)
            own = binary_proportions(internal, positive, cut, confidence) if internal is not None else None
            for key, label in (("sensitivity", "sensitivity"), ("specificity", "specificity"), ("ppv", "PPV"),
                               ("npv", "NPV")):  # fmt: skip
                if cut == 0.5 and key in ("ppv", "npv"):
                    continue  # at 0.5 the per-class table has them; at the operating threshold they are new
                rows.append(proportion_row(f"{key}@{cut:.4g}", f"{label} of {name} {said}",
                                           own[key] if own else None, ext[key]))  # fmt: skip
    return rows


def calibration_line(truth: np.ndarray, probability: np.ndarray) -> dict[str, Any]:
    """Calibration intercept (calibration-in-the-large: the offset a that logit(P(y)) = a + logit(p) needs; 0 is
    perfect) and calibration slope (b in logit(P(y)) = a + b logit(p); 1 is perfect, below 1: predictions too
    extreme), by maximum likelihood. Undefined (None, with the reason) when the set holds one outcome only."""
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(probability, dtype=np.float64).reshape(-1), 1e-6, 1 - 1e-6)
    if len(truth) == 0 or truth.min() == truth.max():
        return {"intercept": None, "slope": None, "why": "the set holds one outcome only"}
    logit = np.log(p / (1 - p))

    def nll(a: float, b: float) -> float:
        z = a + b * logit
        return float(np.sum(np.logaddexp(0, z) - truth * z))

    intercept = minimize_scalar(lambda a: nll(a, 1.0), bounds=(-20, 20), method="bounded").x
    fit = minimize(lambda v: nll(v[0], v[1]), x0=[0.0, 1.0], method="BFGS")
    slope = float(fit.x[1])
    note = "" if abs(slope) < 50 else "the outcome is almost perfectly separated: the slope is not estimable"
    return {"intercept": round(float(intercept), 4), "slope": None if note else round(slope, 4),
            **({"why": note} if note else {})}  # fmt: skip


def calibration_summary(scored: Scored, positive: int | None) -> dict[str, Any]:
    """ECE (top-label confidence, as metrics.json's) and the calibration line: for a binary task on P(positive
    class); otherwise on the top-label confidence (was the predicted class right?)."""
    ece = _finite(expected_calibration_error(scored.targets, scored.scores, scored.task, 15))
    if scored.task == "multilabel":
        return {"ece": ece, "intercept": None, "slope": None, "on": "", "why": "not computed for multi-label tasks"}
    if positive is not None:
        truth = np.asarray(scored.targets).reshape(-1) == positive
        return {"ece": ece, "on": "P(positive class)", **calibration_line(truth, scored.scores[:, positive])}
    correct = predicted_labels(scored.scores, scored.task) == np.asarray(scored.targets).reshape(-1)
    return {"ece": ece, "on": "top-label confidence", **calibration_line(correct, scored.scores.max(axis=1))}


# Rendering: one section per external set, in RUN/external/NAME/report.html and in the run's report.html.

MARK_START, MARK_END = "<!-- external:start -->", "<!-- external:end -->"


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("medclass.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _cell(value: Any, bounds: Any, computed: bool, signed: bool = False) -> dict[str, str]:
    if value is None:
        return {"value": "n/a", "interval": ""}
    return {"value": f"{value:+.4f}" if signed else f"{value:.4f}",
            "interval": interval_text(bounds, 4, computed=computed)}  # fmt: skip


def section_context(result: dict[str, Any]) -> dict[str, Any]:
    """What the template shows of one external set's stored result (external/NAME/metrics.json)."""
    rows = []
    for row in result["side_by_side"]:
        undefined = row.get("undefined", {})
        rows.append({
            "label": row["label"],
            "internal": _cell(row["internal"], row["internal_ci"], "internal" in undefined),
            "external": _cell(row["external"], row["external_ci"], "external" in undefined),
            "difference": _cell(row["difference"], row["difference_ci"], "difference" in undefined, signed=True),
            "counts": row.get("counts", ""),
            "separated": bool(row["difference_ci"]) and (row["difference_ci"][0] > 0 or row["difference_ci"][1] < 0),
        })  # fmt: skip
    notes = [f"{row['label']}: {side} interval undefined: {why}" for row in result["side_by_side"]
             for side, why in row.get("undefined", {}).items()]  # fmt: skip
    subgroups = [gap_sentence(entry) + " Images: " + ", ".join(f"{g['value']} {g['n']}" for g in entry["subgroups"])
                 for entry in result.get("subgroups") or []]  # fmt: skip
    return {"result": result, "rows": rows, "notes": notes, "plural": plural, "html": html, "subgroups": subgroups}


def render_section(result: dict[str, Any], where: ExternalDir | None = None) -> str:
    """One external set's section; with ``where`` (its folder) the thumbnails of its copies are embedded."""
    copies = where.copies_path if where is not None and where.copies_path.is_file() else None
    context = {**section_context(result), "copies": png_data_uri(copies) if copies is not None else ""}
    return _environment().get_template("external_section.html.j2").render(**context)


def write_page(where: ExternalDir, result: dict[str, Any]) -> Path:
    """RUN/external/NAME/report.html: the section alone, as a page."""
    section = render_section(result, where)
    page = _environment().get_template("external_page.html.j2").render(section=section, result=result)
    return atomic_write_text(where.report_path, page)


def refresh_run_report(report: Path, results: list[tuple[dict[str, Any], ExternalDir]]) -> bool:
    """Put every external set's section into a run's report.html (between its markers, or before the gate's
    section in a report written before external validation existed). False when there is no report."""
    if not report.is_file():
        return False
    text = report.read_text(encoding="utf-8")
    body = "\n".join(render_section(r, where) for r, where in results)
    section = f"{MARK_START}\n{body}\n{MARK_END}"
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(MARK_END) :]
    else:
        anchor = text.find("<!-- gate:start -->")
        anchor = anchor if anchor >= 0 else text.rfind("</body>")
        text = text[:anchor] + section + "\n" + text[anchor:]
    atomic_write_text(report, text)
    return True
