"""``medclass train --interactive``: choose the data, model, batch size and workers at validated prompts, then see
the equivalent non-interactive command (the guided mode only writes that command; the config system does the rest)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from rich.console import Console
from rich.prompt import Confirm, IntPrompt, Prompt

from medclass.errors import UserError


def _choose_data(console: Console, configs: list[Path]) -> tuple[Path | None, list[str]]:
    console.print("Datasets: a shipped config, or a folder with one folder per class (or train/val/test folders).")
    for number, path in enumerate(configs, start=1):
        console.print(f"  {number}. {path}")
    while True:
        answer = Prompt.ask("Dataset (number, config file or image folder)", console=console).strip()
        if answer.isdigit() and 1 <= int(answer) <= len(configs):
            return configs[int(answer) - 1], []
        path = Path(answer).expanduser()
        if path.is_file() and path.suffix in (".yaml", ".yml"):
            return path, []
        if path.is_dir():
            name = "".join(c if c.isalnum() or c in "._-" else "_" for c in path.resolve().name) or "data"
            return None, [f"experiment={name}", "data.source=folder", f"data.root={path.resolve()}"]
        console.print(f"[red]{answer!r} is neither a number from the list, a YAML config nor a folder[/]")


def _choose_model(console: Console, default: str) -> str:
    from medclass.models import check_model_name

    while True:
        name = Prompt.ask("Model (any timm name, or hf:<id or folder>)", default=default, console=console).strip()
        try:
            check_model_name(name)
            return name
        except UserError as exc:
            console.print(f"[red]{exc}[/]")


def _choose_int(console: Console, question: str, default: int, low: int, high: int) -> int:
    while True:
        value = IntPrompt.ask(question, default=default, console=console)
        if low <= value <= high:
            return value
        console.print(f"[red]choose a number from {low} to {high}[/]")


def guided_config(console: Console, config: Path | None, overrides: list[str]) -> tuple[Path | None, list[str]]:
    """Ask for what is not given yet; returns the config file (or None) and the overrides to apply."""
    from medclass.config import load_config

    if config is None and not overrides:
        configs = sorted(Path("configs").glob("*.yaml")) if Path("configs").is_dir() else []
        config, overrides = _choose_data(console, configs)
    current = load_config(config, overrides) if config is not None else None
    model = _choose_model(console, current.model.name if current else "resnet18")
    default_batch = current.data.batch_size if current and current.data.batch_size != "auto" else 64
    batch = _choose_int(console, "Batch size", default_batch, 1, 4096)
    workers = _choose_int(console, "Data loader workers", 0, 0, max(1, os.cpu_count() or 1) * 2)
    overrides = [*overrides, f"model.name={model}", f"data.batch_size={batch}", f"data.num_workers={workers}"]
    load_config(config, overrides)  # validate the whole answer before showing or running it
    command = ["medclass", "train", *(["-c", str(config)] if config is not None else []), *overrides]
    console.print("Equivalent command:")
    console.print("  " + " ".join(shlex.quote(part) for part in command), highlight=False, soft_wrap=True)
    if not Confirm.ask("Start training now?", default=True, console=console):
        raise SystemExit(0)
    return config, overrides
