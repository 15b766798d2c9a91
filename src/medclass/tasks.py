"""Task types, shared by data sources, losses, metrics and prediction."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal, get_args

from medclass.errors import ConfigError

if TYPE_CHECKING:  # tensors arrive from callers; importing torch here would slow every config check
    import torch

Task = Literal["binary", "multiclass", "multilabel", "ordinal"]
TASKS: tuple[str, ...] = get_args(Task)


def is_single_label(task: Task) -> bool:
    """True when every image has exactly one class (scores are a softmax over classes)."""
    return task != "multilabel"


def scores_from_logits(logits: torch.Tensor, task: Task) -> torch.Tensor:
    """Class probabilities: softmax over classes, or one sigmoid per label for multi-label tasks."""
    return logits.softmax(dim=1) if is_single_label(task) else logits.sigmoid()


# Words that name the unremarkable class of a binary task; the other class is the one a test is meant to detect.
NEGATIVE_WORDS = frozenset(
    {"normal", "negative", "benign", "no", "none", "healthy", "absent", "control", "nonpneumonia", "notumor"}
)


def looks_negative(name: str) -> bool:
    """True for class names such as "NORMAL", "normal, benign", "no_finding", "negative", "notumor"."""
    words = set(re.split(r"[^a-z0-9]+", name.lower())) - {""}
    return bool(words & NEGATIVE_WORDS) or name.lower().startswith(("no ", "no_", "non-", "non_"))


def default_positive_class(classes: list[str]) -> int:
    """The class binary metrics are about when evaluation.positive_class is not set: the only class whose name
    does not look like normal/negative/benign/no (BreastMNIST: malignant; chest X-ray: PNEUMONIA), else the
    second class (label 1, MedMNIST's convention)."""
    abnormal = [i for i, name in enumerate(classes) if not looks_negative(name)]
    return abnormal[0] if len(abnormal) == 1 else len(classes) - 1


def positive_class_index(classes: list[str], configured: str | None) -> int:
    """The positive class of a binary task: the configured name (exact, else case-insensitive) or the default."""
    if configured is None:
        return default_positive_class(classes)
    if configured in classes:
        return classes.index(configured)
    folded = [c for c in classes if c.lower() == configured.lower()]
    if len(folded) == 1:
        return classes.index(folded[0])
    raise ConfigError(
        f"evaluation.positive_class: {configured!r} is not a class of this dataset; choose one of "
        + ", ".join(repr(c) for c in classes)
    )
