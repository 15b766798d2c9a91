"""Task types, shared by data sources, losses, metrics and prediction."""

from __future__ import annotations

from typing import Literal, get_args

import torch

Task = Literal["binary", "multiclass", "multilabel", "ordinal"]
TASKS: tuple[str, ...] = get_args(Task)


def is_single_label(task: Task) -> bool:
    """True when every image has exactly one class (scores are a softmax over classes)."""
    return task != "multilabel"


def scores_from_logits(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """Class probabilities: softmax over classes, or one sigmoid per label for multi-label tasks."""
    return logits.softmax(dim=1) if is_single_label(task) else logits.sigmoid()
