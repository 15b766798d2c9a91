"""The service under load: benchmarks/serve_load.py run briefly (a real server on loopback, concurrent uploads of a
real X-ray): no failed request, the server healthy afterwards, and its memory bounded. It serves the session's tiny
chest X-ray model (--model), not one the benchmark would train first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_concurrent_uploads_for_a_bounded_time(tmp_path: Path, chest_run: Path) -> None:
    out = tmp_path / "load.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--model", str(chest_run),
                           "--clients", "6", "--seconds", "6", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["requests"] >= 20 and result["errors"] == 0, result
    assert result["healthy_after"] is True
    growth = result["server_rss_mib"]["after"] - result["server_rss_mib"]["before"]
    assert growth < 150, f"server memory grew by {growth:.0f} MiB under load"
    latency = result["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert "ratio service / direct" in done.stdout
