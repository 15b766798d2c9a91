"""Small file helpers: every result file is written atomically (temporary file in the same folder, then rename),
so a crash never leaves a half-written file behind. The standard library has no one-call atomic write."""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_writer(path: str | Path, text: bool = False) -> Iterator[IO[Any]]:
    """A file handle whose content replaces ``path`` only when the block ends without an exception (for results
    written piece by piece, too large to hold in memory at once)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # open(..., "x") rather than mkstemp: the file gets the user's usual permissions (umask), not 0600.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with open(tmp, "x", newline="", encoding="utf-8") if text else open(tmp, "xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_writer(path) as handle:
        handle.write(data)
    return Path(path)


def give_usual_permissions(path: str | Path) -> Path:
    """Set a file written by a library that creates it 0600 (safetensors does) to the mode the user's umask gives
    every other file, so a package's files can be read by the same people."""
    probe = Path(path).parent / f".{uuid.uuid4().hex[:8]}.mode"
    with open(probe, "xb"):  # a file made the usual way carries the umask; reading the umask itself would set it
        pass
    try:
        os.chmod(path, probe.stat().st_mode & 0o777)
    finally:
        probe.unlink(missing_ok=True)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a data: URI, so that a report page holds its pictures and needs no other file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def save_figure(fig: Any, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """A matplotlib figure as a PNG, written atomically (every figure medclass saves goes through here)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, **({"bbox_inches": "tight"} if tight else {}))
    return atomic_write_bytes(path, buffer.getvalue())
