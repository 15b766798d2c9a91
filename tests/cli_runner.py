"""Run the real `medclass` command in another process, as a user would, and check its one-line errors.

Each command runs in a process of its own, with its own arguments, environment, working folder, stdout and stderr,
and exits with its own code, as from a shell. What the suite saves is the start: importing torch, Lightning (which
imports torchmetrics, transformers and torchvision's models) and timm takes 8-12 s on a 2-core CPU, paid again by
each of the suite's few hundred commands. So each test worker keeps one *fork server*: a Python process that has
imported those third-party libraries (never medclass itself: each command imports medclass fresh, as from a shell)
and forks a child per command. The child sets its environment and folder, points fds 0-2 at /dev/null and two files,
runs ``medclass.cli.app:main`` and exits through the interpreter's normal shutdown (atexit handlers run).

A command whose environment differs from the server's in anything but MEDCLASS_* and PYTEST_* (a library may have
read it at import: HF_HUB_OFFLINE, for one), or one that starts while another is running, runs as a plain
subprocess instead; so does every command when MEDCLASS_TEST_FORK=0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

TIMEOUT = 600

SERVER = r"""
import json, os, signal, sys
import torch, torchvision, lightning, timm, sklearn.metrics, pandas, scipy.stats, PIL.Image
import matplotlib, matplotlib.figure, matplotlib.backends.backend_agg
sys.stdout.write("ready\n"); sys.stdout.flush()
requests, replies = sys.stdin, sys.stdout
for line in requests:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, job["stdout"], os.O_WRONLY | os.O_CREAT),
                                (2, job["stderr"], os.O_WRONLY | os.O_CREAT)):
            opened = os.open(path, flags, 0o600)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = open(0, closefd=False)
        del requests, replies, line
        sys.argv = job["argv"]
        sys.path[0] = os.path.dirname(sys.argv[0])  # as for the console script: its folder, not the working one
        from medclass.cli.app import main
        sys.exit(main())
    replies.write(json.dumps({"pid": pid}) + "\n"); replies.flush()
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"code": os.waitstatus_to_exitcode(status)}) + "\n"); replies.flush()
"""


def _script() -> list[str]:
    script = Path(sys.executable).with_name("medclass")
    return [str(script)] if script.exists() else [sys.executable, "-m", "medclass.cli.app"]


def _import_time_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(("MEDCLASS_", "PYTEST_"))}


class ForkServer:
    """One per test process, started at its first command; it ends when the test process closes its stdin."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.env = _import_time_env(dict(os.environ))  # at collection, before any test changes the environment
        self.busy = threading.Lock()
        self.off = os.environ.get("MEDCLASS_TEST_FORK") == "0"

    def _started(self) -> subprocess.Popen | None:
        if self.process is None and not self.off:
            self.process = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True, env=self.env)  # fmt: skip
            if self.process.stdout.readline().strip() != "ready":
                self.off = True
        return None if self.off else self.process

    def run(self, argv: list[str], env: dict[str, str], cwd: Path | None) -> subprocess.CompletedProcess | None:
        """The finished command, or None when it must run as a plain subprocess."""
        if _import_time_env(env) != self.env or not self.busy.acquire(blocking=False):
            return None
        try:
            server = self._started()
            if server is None:
                return None
            with tempfile.TemporaryDirectory(prefix="medclass-cmd-") as folder:
                out, err = Path(folder) / "stdout", Path(folder) / "stderr"
                job = {"argv": argv, "env": env, "cwd": str(cwd or Path.cwd()), "stdout": str(out), "stderr": str(err)}
                server.stdin.write(json.dumps(job) + "\n")
                server.stdin.flush()
                pid = json.loads(server.stdout.readline())["pid"]
                timed_out = threading.Event()

                def stop() -> None:
                    timed_out.set()
                    os.kill(pid, signal.SIGKILL)

                timer = threading.Timer(TIMEOUT, stop)
                timer.start()
                try:
                    reply = server.stdout.readline()
                finally:
                    timer.cancel()
                if not reply:
                    self.off = True
                    raise RuntimeError(f"the fork server ended while running {' '.join(argv)}")
                if timed_out.is_set():
                    raise subprocess.TimeoutExpired(argv, TIMEOUT)
                return subprocess.CompletedProcess(argv, json.loads(reply)["code"], out.read_text(errors="replace"),
                                                   err.read_text(errors="replace"))  # fmt: skip
        finally:
            self.busy.release()


SERVER_OF_THIS_PROCESS = ForkServer()


def medclass(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    command, environment = _script(), {**os.environ, **(env or {})}
    done = SERVER_OF_THIS_PROCESS.run([*command, *args], environment, cwd) if len(command) == 1 else None
    if done is not None:
        return done
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=TIMEOUT, env=environment, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
