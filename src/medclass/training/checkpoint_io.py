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
                except RuntimeError:
                    if recorder.error is not None:
                        recorder.error.filename = recorder.error.filename or str(path)
                        raise recorder.error from None
                    raise
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
