"""``medclass memory``: measured memory of a training step and the largest batch that fits. Registered on the app by
medclass.cli.app."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table

from medclass.cli.common import app, console, err_console, user_errors
from medclass.errors import UserError

GIB = 1024**3  # not imported from medclass.training.memory: that would load torch on every CLI start


@app.command()
@user_errors
def memory(
    ctx: typer.Context,
    model: Annotated[list[str], typer.Option("--model", "-m", help="Model name(s); repeat or separate by commas.")],
    input_size: Annotated[
        int, typer.Option("--input-size", "--image-size", min=8, help="Input size in pixels (data.input_size).")
    ] = 224,
    batch_size: Annotated[int, typer.Option(min=1, help="The batch size you plan to train with.")] = 32,
    precision: Annotated[str, typer.Option(help="32-true, bf16-mixed or 16-mixed (GPU).")] = "32-true",
    memory_gb: Annotated[
        float | None, typer.Option(help="Memory budget in GiB; default: the GPU's memory, or the RAM available now.")
    ] = None,
    measure: Annotated[str, typer.Option(help="Batch sizes measured to fit the line, comma-separated.")] = "4,16",
) -> None:
    """Measure the peak memory of real training steps at a few batch sizes, fit it against batch size, and print
    the memory your batch size needs and the largest batch that fits."""
    if precision not in ("32-true", "bf16-mixed", "16-mixed"):
        raise UserError(f"--precision {precision!r}: use 32-true, bf16-mixed or 16-mixed")
    try:
        sizes = tuple(int(v) for v in measure.split(",") if v.strip())
    except ValueError:
        raise UserError(f"--measure {measure!r}: give batch sizes separated by commas, e.g. 2,4,8") from None
    if len(set(sizes)) < 2:  # also checked where measured; here before torch is imported (seconds)
        raise UserError("give at least two different batch sizes to measure")
    from medclass.training.memory import MAX_REPORTED_BATCH, estimate_memory

    names = [name.strip() for item in model for name in item.split(",") if name.strip()]
    budget = int(memory_gb * GIB) if memory_gb else None
    # Narrow enough for 80 columns (a log file): two-line headers, one measurement per line, model names whole.
    table = Table(title=f"training-step memory at {input_size} px, {precision}", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)  # fmt: skip
    table.add_column("model", no_wrap=True, min_width=max(len(n) for n in names) if names else 5)
    for column in ("params", "measured\nbatch: GiB", "fixed\nGiB", "MiB per\nimage", f"at {batch_size}\nGiB",
                   "max\nbatch"):  # fmt: skip
        table.add_column(column, justify="left" if column.startswith("measured") else "right", no_wrap=True)
    device, budget_used, failed, coarse = "", 0, [], False
    for name in names:
        try:
            estimate = estimate_memory(name, input_size, precision, sizes, budget)
        except UserError as exc:  # one model that cannot be measured does not hide the others
            if len(names) == 1:
                raise
            failed.append(f"{name}: {exc}")
            table.add_row(name, "", "(see below)", "", "", "", "")
            continue
        device, budget_used = estimate.device, estimate.budget_bytes
        coarse = coarse or estimate.below_resolution
        need = estimate.predict(batch_size)
        largest = estimate.max_batch_size
        largest_text = f">={largest}" if largest >= MAX_REPORTED_BATCH else str(largest)
        fits = "fits" if need <= estimate.budget_bytes else "too big"
        table.add_row(
            name, f"{estimate.parameters / 1e6:.1f}M",
            "\n".join(f"{b}: {m / GIB:.2f}" if m > 0 else f"{b}: OOM" for b, m in estimate.measured.items()),
            f"{estimate.fixed_bytes / GIB:.2f}",
            f"<{estimate.bytes_per_image / 2**20:.1f}" if estimate.below_resolution
            else f"{estimate.bytes_per_image / 2**20:.1f}",
            f"{need / GIB:.2f}\n{fits}",
            largest_text,
        )  # fmt: skip
    what = "GPU memory" if device == "cuda" else "process memory (peak RSS of a fresh process)"
    table.caption = f"{what}; budget {budget_used / GIB:.1f} GiB on {device}" if device else ""
    if coarse:
        table.caption += "; <: the images' share is below what the measurement resolves (an upper bound)"
    console.print(table)
    for line in failed[:-1]:
        err_console.print(f"[bold red]error:[/] {line}", highlight=False, soft_wrap=True)
    if failed:
        raise UserError(failed[-1])  # the last one, printed as every user error is (exit code 2)
