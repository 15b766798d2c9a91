"""The benchmark leaderboard: CSV, Markdown and a bar chart of the test metric with parameters, throughput and
training time."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from medclass.io import atomic_write_text, save_figure
from medclass.metrics import METRICS, metric_label


def columns() -> tuple[str, ...]:
    """The leaderboard's columns: the headline metrics of the registry (read when written, so a metric registered
    later is in it)."""
    return ("rank", "model", "status", *METRICS.names("headline"), "parameters_M", "images_per_s", "train_min",
            "best_epoch", "run_dir", "error")  # fmt: skip


def ranked(rows: list[Any], metric: str) -> list[Any]:
    """Successful models by the test metric (best first; loss-like metrics are not ranked), then the failures."""
    key = metric if metric in METRICS.names("headline") else "auc"
    ok = sorted((r for r in rows if r.status == "ok"), key=lambda r: -r.metrics.get(key, float("-inf")))
    return ok + [r for r in rows if r.status != "ok"]


def _record(rank: int | str, row: Any) -> dict[str, Any]:
    return {
        "rank": rank, "model": row.label, "status": row.status,
        **{m: f"{row.metrics[m]:.4f}" if m in row.metrics else "" for m in METRICS.names("headline")},
        "parameters_M": f"{row.parameters / 1e6:.2f}" if row.parameters else "",
        "images_per_s": f"{row.images_per_second:.0f}" if row.images_per_second else "",
        "train_min": f"{row.train_minutes:.1f}" if row.train_minutes is not None else "",
        "best_epoch": row.best_epoch or "", "run_dir": row.run_dir or "", "error": row.error or "",
    }  # fmt: skip


def write_leaderboard(folder: Path, rows: list[Any], metric: str) -> dict[str, Path]:
    key = metric if metric in METRICS.names("headline") else "auc"
    records = [_record(i + 1 if r.status == "ok" else "-", r) for i, r in enumerate(ranked(rows, metric))]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns())
    writer.writeheader()
    writer.writerows(records)
    files = {"csv": atomic_write_text(folder / "leaderboard.csv", buffer.getvalue())}
    shown = [c for c in columns() if c not in ("run_dir", "error")]
    lines = [f"# Leaderboard (test split, ranked by {key.upper()})", "", "| " + " | ".join(shown) + " |",
             "|" + "---|" * len(shown)]  # fmt: skip
    lines += ["| " + " | ".join(str(r[c]) for c in shown) + " |" for r in records]
    failures = [r for r in records if r["status"] != "ok"]
    if failures:
        lines += ["", "## Failed", *(f"- {r['model']}: {r['error']}" for r in failures)]
    files["markdown"] = atomic_write_text(folder / "leaderboard.md", "\n".join(lines) + "\n")
    files["chart"] = plot_leaderboard(folder / "leaderboard.png", ranked(rows, metric), key)
    return files


def plot_leaderboard(path: Path, rows: list[Any], metric: str) -> Path:
    """Bars of the test metric on its own 0-1 axis; size, speed and training time as a table beside it."""
    ok = [r for r in rows if r.status == "ok"]
    failed = [r for r in rows if r.status != "ok"]
    fig = Figure(figsize=(10, 1.3 + 0.55 * max(1, len(rows))), layout="constrained")
    ax = fig.add_subplot()
    labels = [r.label for r in ok] + [f"{r.label} (failed)" for r in failed]
    values = [r.metrics.get(metric, 0.0) for r in ok] + [0.0] * len(failed)
    ax.barh(range(len(labels)), values, color=["tab:blue"] * len(ok) + ["tab:gray"] * len(failed))
    for y, r in enumerate(ok):
        value = r.metrics.get(metric, 0.0)
        ax.annotate(f"{value:.3f}", (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        size = f"{r.parameters / 1e6:.1f} M parameters" if r.parameters else ""
        speed = f"{r.images_per_second:.0f} images/s" if r.images_per_second else ""
        took = f"{r.train_minutes:.1f} min training" if r.train_minutes is not None else ""
        note = ", ".join(part for part in (size, speed, took) if part)
        # Beside the axis (axes coordinates past 1), so that the metric's axis ends where the metric does.
        ax.annotate(note, (1.02, y), xycoords=("axes fraction", "data"), va="center", fontsize=8, annotation_clip=False)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.08)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.set_xlabel(f"{metric_label(metric)} on the held-out test split")
    ax.set_title(f"Benchmark: models ranked by test {metric_label(metric)}")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)
