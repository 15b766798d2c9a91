"""Rich renderings of results for the terminal."""

from __future__ import annotations

from rich.table import Table

from medclass.evaluation.evaluate import EvaluationResult

LABELS = {"acc": "ACC", "auc": "AUC", "f1_macro": "F1 (macro)", "balanced_acc": "Balanced ACC"}


def metrics_table(result: EvaluationResult) -> Table:
    title = f"{result.split} split, {result.checkpoint} checkpoint (epoch {result.epoch})"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in result.metrics.items():
        table.add_row(LABELS.get(name, name), f"{value:.4f}")
    table.caption = f"{result.n_samples} images of {result.extra.get('dataset', 'the dataset')}"
    return table
