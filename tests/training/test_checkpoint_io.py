"""Checkpoint writes cut by a real Ctrl-C: the previous file stays whole, no temporary file is left, and the
interruption comes out as KeyboardInterrupt (torch's zip writer used to turn it into a RuntimeError, which made a
double Ctrl-C during a checkpoint write a crash with two tracebacks instead of an interrupted run)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from medclass.training.checkpoint_io import AtomicCheckpointIO


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt, as in a terminal (a shell's background job inherits SIGINT ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_a_checkpoint_write(tmp_path: Path, ctrl_c) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "weights": torch.ones(8)}, path)
    big = {"epoch": 2, "weights": [torch.rand(8_000_000) for _ in range(8)]}  # 256 MB: a write of ~0.3-1 s
    started = time.perf_counter()
    io.save_checkpoint(big, tmp_path / "timing.ckpt")
    write_s = time.perf_counter() - started
    (tmp_path / "timing.ckpt").unlink()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    cut = 0
    for fraction in (0.02, 0.1, 0.2, 0.4, 0.7):  # the Ctrl-C lands early, in the middle or late in the write
        timer = threading.Timer(write_s * fraction, os.kill, (os.getpid(), signal.SIGINT))
        finished = False
        timer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                io.save_checkpoint(big, path)
                finished = True  # the write won the race: the signal comes during the sleep
                time.sleep(10)
        finally:
            timer.join()
        cut += not finished
        assert torch.load(path, weights_only=True)["epoch"] == (2 if finished else 1), "a whole checkpoint"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"], "no temporary file left"
        io.save_checkpoint({"epoch": 1, "weights": torch.ones(8)}, path)
    assert cut >= 2, "the signal landed inside a write at least twice"
