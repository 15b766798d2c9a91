"""Errors a user can cause, and how to suggest a fix.

Every mistake a user can make (a wrong path, an unknown field, a model name timm does not know) raises a
:class:`UserError` subclass whose message says what was wrong and what to do. The CLI prints it on one line and
exits with code 2. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix; the message says how."""

    def __init__(self, message: str) -> None:
        # One line: the CLI promises a single-line message.
        super().__init__(" ".join(message.split()))


class ConfigError(UserError):
    """The experiment configuration or an override is invalid."""


class DataError(UserError):
    """A dataset file is missing, unreadable or inconsistent."""


class ModelError(UserError):
    """A model cannot be built or its weights cannot be loaded."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class RunDirError(UserError):
    """A run directory is missing files that a command needs."""


def suggest(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """Return ``" (did you mean a, b?)"`` for the closest choices to ``word``, or ``""`` when none is close."""
    matches = difflib.get_close_matches(word, list(choices), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(matches)}?)" if matches else ""
