"""benchmarks/ood_detectors.py (how the default out-of-distribution detector is chosen) runs end to end: a real
chest X-ray run against real brain MRI images, every detector fitted on the train split and scored."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT


def test_ood_detector_benchmark_runs_on_a_real_run(chest_run: Path, data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ood.md"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "ood_detectors.py"), str(chest_run),
         "--ood", f"brain_mri={data_dir / 'brain_mri_4class'}", "--limit", "60", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "brain_mri" in line]
    detectors = {row.split(" | ")[0].strip("| ") for row in rows}
    assert {"MSP", "Energy", "Mahalanobis", "kNN (k=50)"} <= detectors and any(d.startswith("ViM") for d in detectors)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[2] == "60"
        auroc, fpr, test_pass, accepted = (float(c) for c in cells[3:])
        assert 0 <= auroc <= 1 and 0 <= fpr <= 1 and 0 <= accepted <= 1
        assert 0.5 < test_pass <= 1  # the validation threshold lets most of the test split through
    assert re.search(r"fitted on its train split \(\d+ images\)", out.read_text())
