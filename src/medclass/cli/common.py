"""What every command module of the CLI shares: the app, the consoles, the user-error wrapper, logging set-up and
the common arguments. Command modules (app, use, memory) import from here, never from each other."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from medclass.errors import RunInterrupted, UserError, storage_error
from medclass.wording import file_slug

app = typer.Typer(
    name="medclass",
    help="Train, evaluate and compare image classifiers on medical images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
USER_ERROR_EXIT_CODE = 2


def _print_cause(exc: BaseException, call_args: tuple, call_kwargs: dict) -> None:
    """With --verbose, the library error behind a user error (kept as its cause or context), as a traceback. The
    flag is read from the command's context (every command takes ``ctx``)."""
    context = next((a for a in (*call_args, *call_kwargs.values()) if hasattr(a, "find_root")), None)
    root = context.find_root() if context is not None else None
    if not (root is not None and isinstance(root.obj, dict) and root.obj.get("verbose")):
        return
    cause = exc.__cause__ or exc.__context__ or (exc if isinstance(exc, OSError) else None)
    if cause is not None:
        text = "".join(traceback.format_exception(cause))
        err_console.print(f"cause (--verbose):\n{text.rstrip()}", highlight=False, markup=False, soft_wrap=True)


def user_errors(func: F) -> F:
    """Print a :class:`UserError` as one line on stderr and exit with code 2; other errors keep their traceback.
    With --verbose the error's cause follows (the library exception it translates)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RunInterrupted as exc:  # a stop that was asked for is said as such, not as an error
            err_console.print(str(exc), style="bold yellow", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except UserError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            _print_cause(exc, args, kwargs)
            raise typer.Exit(getattr(exc, "exit_code", USER_ERROR_EXIT_CODE)) from None
        except OSError as exc:  # a full disk or a read-only folder is the user's to fix; other OS errors are bugs
            error = storage_error(exc)
            if error is None:
                raise
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            _print_cause(exc, args, kwargs)
            raise typer.Exit(USER_ERROR_EXIT_CODE) from None

    return wrapper  # type: ignore[return-value]


class _PlainFormatter(logging.Formatter):
    """Log lines for a file or a pipe: one line each, never wrapped at 80 columns, a level word only where it
    matters ("warning: ...")."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


def configure_logging(verbose: bool) -> None:
    """medclass's own messages at INFO; other libraries' loggers only from WARNING (the ONNX optimizer, MLflow,
    transformers and others announce their steps at INFO), unless --verbose."""
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False, show_time=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PlainFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s", handlers=[handler],
                        force=True)  # fmt: skip
    logging.getLogger("medclass").setLevel(logging.INFO)
    if not verbose:
        # MLflow sets its own logger to INFO when imported (the store's "Updating database tables" on every
        # command that opens one), unless this variable says otherwise; a user's own setting is kept.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def quiet_lightning(ctx: typer.Context) -> None:
    """Lightning announces devices and tips at INFO and sets its loggers' levels when imported; so after importing
    it, lower them again unless --verbose was given."""
    import lightning  # noqa: F401

    verbose = bool(ctx.obj and ctx.obj.get("verbose"))
    for name in ("lightning.pytorch", "lightning.fabric", "mlflow"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # "Experiment with name ... not found. Creating it." is how every first MLflow run starts, not a problem.
    logging.getLogger("lightning.pytorch.loggers.mlflow").setLevel(logging.INFO if verbose else logging.ERROR)


ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Experiment YAML file (see configs/).")]
OverridesArgument = Annotated[
    list[str] | None,
    typer.Argument(
        help="Overrides as dotted.key=value, e.g. trainer.max_epochs=3 data.batch_size=64.", show_default=False
    ),
]


def data_config(target: Path, overrides: list[str]):
    """A data config from an experiment YAML, or a folder source over a folder of class folders."""
    from medclass.config import load_config

    if target.is_dir():
        return load_config(
            None, overrides, experiment=file_slug(target.name, "data"), data={"source": "folder", "root": str(target)}
        )
    return load_config(target, overrides)


TargetArgument = Annotated[Path, typer.Argument(help="An experiment YAML, or a folder with one folder per class.")]
