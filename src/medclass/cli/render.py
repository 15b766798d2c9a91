"""Rich renderings of results for the terminal."""

from __future__ import annotations

from rich.table import Table

from medclass.evaluation.evaluate import EvaluationResult

LABELS = {"acc": "ACC", "auc": "AUC", "f1_macro": "F1 (macro)", "balanced_acc": "Balanced ACC"}


def metrics_table(result: EvaluationResult, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(LABELS.get(name, name), f"{value:.4f}")
    table.caption = f"{result.n_samples} images, checkpoint from epoch {result.epoch}"
    return table
