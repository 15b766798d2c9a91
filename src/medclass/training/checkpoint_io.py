"""Checkpoints written atomically: Lightning's torch checkpoint I/O, but into a temporary file that is renamed
over the old one, so a run killed while saving still has an intact last.ckpt."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class _WriteRecorder:
    """A file wrapper that keeps the OSError of a failed write: torch.save reports a full disk as a RuntimeError
    from its zip writer ("unexpected pos ..."), and the real cause is needed for a clear message."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def _interrupting_cause(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt or OSError that a RuntimeError was raised while handling: torch's zip writer, closing
    after a write cut by a second Ctrl-C, raises its own RuntimeError over the KeyboardInterrupt, which must come
    out so the run is recorded as interrupted (the Ctrl-C can land in any Python line of the write)."""
    seen = exc.__context__
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt | OSError):
            return seen
        seen = seen.__context__
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as handle:
                recorder = _WriteRecorder(handle)
                try:
                    torch.save(checkpoint, recorder)
                except RuntimeError as exc:
                    cause = recorder.error or _interrupting_cause(exc)
                    if isinstance(cause, OSError):
                        cause.filename = cause.filename or str(path)
                    if cause is not None:
                        raise cause from None
                    raise
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
