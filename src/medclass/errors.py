"""Errors a user can cause, and how to suggest a fix.

Every mistake a user can make (a wrong path, an unknown field, a model name timm does not know) raises a
:class:`UserError` subclass whose message says what was wrong and what to do. The CLI prints it on one line and
exits with code 2. Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import errno
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


class RunInterrupted(UserError):
    """A run stopped by SIGINT or SIGTERM at a safe point; ``exit_code`` is 128 + the signal (130, 143)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StorageError(UserError):
    """A file could not be written: no space left, over a size or disk quota, read-only or not permitted."""


STORAGE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def storage_error(exc: OSError, advice: str = "") -> StorageError | None:
    """The user-facing error for a failed write (None when ``exc`` is some other OS error, i.e. a bug)."""
    if exc.errno not in STORAGE_ERRNOS:
        return None
    what = exc.filename or "a file"
    fix = {
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some space (disk quota)",
        errno.EFBIG: "free space or raise the file-size limit (ulimit -f)",
    }.get(exc.errno, "choose a folder you can write to (e.g. output_dir=...)")
    return StorageError(f"cannot write {what}: {exc.strerror}; {fix}{'. ' + advice if advice else ''}")


def suggest(word: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """Return ``" (did you mean a, b?)"`` for the closest choices to ``word``, or ``""`` when none is close."""
    matches = difflib.get_close_matches(word, list(choices), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(matches)}?)" if matches else ""
