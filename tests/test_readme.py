"""The README's commands are tested like code: make targets exist and every config command it shows validates."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
COMMANDS = [
    line.split("#")[0].strip()
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    for line in block.splitlines()
    if line.strip()
]


def test_readme_make_targets_exist() -> None:
    targets = [c.split()[1] for c in COMMANDS if c.startswith("make ")]
    assert {"demo", "test"} <= set(targets)
    for target in targets:
        dry_run = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True)
        assert dry_run.returncode == 0, dry_run.stderr


def test_readme_ci_calls_the_readme_test_command() -> None:
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_readme_configs_and_overrides_validate() -> None:
    from medclass.config import load_config

    shown = [c for c in COMMANDS if re.match(r"medclass (train|config) ", c)]
    assert shown, "the README should show medclass train/config commands"
    for command in shown:
        args = shlex.split(command)[2:]
        config = args[args.index("-c") + 1]
        overrides = [a for a in args if "=" in a]
        load_config(REPO / config, overrides)
