"""Likely label errors, from out-of-fold probabilities: ``medclass cv`` scores every train+val image with the fold
model that never saw it, which is what confident learning needs (Northcutt et al., JAIR 2021). cleanlab finds the
images whose given label the model doubts beyond the class's own noise level (``find_label_issues``, pruning by
noise rate) and ranks them by self-confidence, the out-of-fold probability of the given label (lowest first).

cleanlab is licensed AGPL-3.0 and medclass Apache-2.0, so cleanlab is not a dependency (as pylibjpeg-libjpeg for
DICOM): with it installed (``pip install cleanlab``), cv writes the ranking; without it, cv says how to get it."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medclass.evaluation.plots import plot_worst_images
from medclass.io import atomic_write_text
from medclass.wording import class_name, short_file

SHEET = 25  # images on the contact sheet
INSTALL = "pip install cleanlab (AGPL-3.0 licensed, so not a dependency of medclass)"


@dataclass
class LabelIssues:
    """The ranked images whose label is in doubt, and how many images were looked at."""

    rows: list[dict[str, Any]] = field(default_factory=list)  # source, given, suggested, self_confidence, rank
    n_images: int = 0
    unavailable: str = ""  # why there is no ranking (cleanlab missing, a multi-label task)
    files: dict[str, Path] = field(default_factory=dict)


def rank_label_issues(
    targets: np.ndarray, probabilities: np.ndarray, sources: list[str], classes: list[str], task: str
) -> LabelIssues:
    """The images cleanlab flags, most doubtful first. ``probabilities`` must be out-of-sample."""
    if task == "multilabel":
        return LabelIssues(n_images=len(targets), unavailable="label issues are ranked for single-label tasks only")
    try:  # an optional dependency (AGPL-3.0): imported where it is used, so medclass runs without it
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores
    except ImportError:
        return LabelIssues(n_images=len(targets), unavailable=f"cleanlab is not installed: {INSTALL}")
    labels = np.asarray(targets).reshape(-1).astype(int)
    probs = np.asarray(probabilities, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)
    flagged = find_label_issues(labels, probs, filter_by="prune_by_noise_rate")
    quality = get_label_quality_scores(labels, probs, method="self_confidence")
    order = [int(i) for i in np.argsort(quality, kind="stable") if flagged[i]]
    rows = [
        {"rank": rank, "source": sources[i], "given": classes[labels[i]],
         "suggested": classes[int(probs[i].argmax())], "self_confidence": round(float(quality[i]), 6)}
        for rank, i in enumerate(order, start=1)
    ]  # fmt: skip
    return LabelIssues(rows, len(labels))


def label_issues_csv(issues: LabelIssues) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "source", "given", "suggested", "self_confidence"])
    for row in issues.rows:
        writer.writerow([row["rank"], row["source"], row["given"], row["suggested"], row["self_confidence"]])
    return buffer.getvalue()


def write_label_issues(
    issues: LabelIssues, csv_path: Path, sheet_path: Path, images: dict[str, np.ndarray]
) -> LabelIssues:
    """label_issues.csv and, from ``images`` (source -> uint8 image), a contact sheet of the top 25."""
    issues.files["csv"] = atomic_write_text(csv_path, label_issues_csv(issues))
    shown = [row for row in issues.rows[:SHEET] if row["source"] in images]
    captions = [
        f"#{row['rank']} {short_file(Path(row['source']).name, 22)}\ngiven: {class_name(row['given'])[:18]}\n"
        f"suggested: {class_name(row['suggested'])[:14]} ({row['self_confidence']:.2f})"
        for row in shown
    ]
    sheet = plot_worst_images(
        sheet_path, [images[row["source"]] for row in shown], captions,
        f"Likely label errors: the {len(shown)} most doubtful of {len(issues.rows)} flagged (out-of-fold, cleanlab)",
    )  # fmt: skip
    if sheet is not None:
        issues.files["sheet"] = sheet
    return issues


def label_issues_markdown(issues: LabelIssues, sheet_name: str, csv_name: str) -> list[str]:
    """summary.md's section."""
    lines = ["", "## Likely label errors (out-of-fold, cleanlab)", ""]
    if issues.unavailable:
        return [*lines, f"Not ranked: {issues.unavailable}."]
    share = len(issues.rows) / issues.n_images if issues.n_images else 0.0
    lines += [
        f"{len(issues.rows)} of the {issues.n_images} train+val images ({share:.1%}) are flagged: the fold model that "
        "never saw them doubts their label beyond the class's own noise level (cleanlab, pruned by noise rate), "
        f"most doubtful first (self-confidence: the out-of-fold probability of the given label). All in `{csv_name}`;"
        " look at them before trusting or changing a label.",
    ]
    if issues.rows:
        lines += ["", "| rank | image | given | suggested | self-confidence |", "|---|---|---|---|---|"]
        lines += [f"| {r['rank']} | {r['source']} | {r['given']} | {r['suggested']} | {r['self_confidence']:.3f} |"
                  for r in issues.rows[:10]]  # fmt: skip
        if "sheet" in issues.files:
            lines += ["", f"![the most doubtful labels]({sheet_name})"]
    return lines
