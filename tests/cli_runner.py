"""Run the real `medclass` command in a subprocess, as a user would, and check its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def medclass(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("medclass")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "medclass.cli.app"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}, cwd=cwd
    )


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
