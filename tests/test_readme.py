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
    from medclass.data.build import load_recipe

    shown = [c for c in COMMANDS if re.match(r"medclass (train|config|data|benchmark) |medclass (cv|tune) .*-c ", c)]
    assert len(shown) >= 5, "the README should show medclass train/config/data commands"
    for command in shown:
        words = shlex.split(command)
        args = words[3:] if words[1] == "data" else words[2:]
        overrides = [a for a in args if "=" in a]
        if words[1] == "data" and words[2] == "build":
            load_recipe(REPO / args[0], overrides)
        elif words[1] == "data":
            load_config(REPO / args[0], overrides)
        else:
            load_config(REPO / args[args.index("-c") + 1], overrides)


def test_readme_benchmark_scripts_exist_and_parse() -> None:
    import ast

    scripts = [c.split()[1] for c in COMMANDS if c.startswith("python benchmarks/")]
    assert len(scripts) >= 3
    for script in scripts:
        source = (REPO / script).read_text()
        assert ast.get_docstring(ast.parse(source)), f"{script} says what it measures"
