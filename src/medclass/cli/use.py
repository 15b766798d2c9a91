"""Commands for using trained models: export, predict, serve, features, register. Registered on the app by
medclass.cli.app; like the rest of the CLI they only parse, call the Python API and print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medclass.cli.common import (
    OverridesArgument,
    TargetArgument,
    app,
    console,
    data_config,
    err_console,
    quiet_lightning,
    user_errors,
)
from medclass.errors import UserError

ModelArgument = Annotated[
    str,
    typer.Argument(help="A model package, a run directory, an exported .onnx file, or models:/<name>/<version>."),
]
GateOption = Annotated[
    str,
    typer.Option(
        help="The gate in front of the model: warn (answer, and flag images that look unlike the training images "
        "or fail the quality check), refuse (no class for those), or off."
    ),
]
TrackingOption = Annotated[
    str | None,
    typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else runs/mlflow.db in this folder)."),
]


@app.command()
@user_errors
def export(
    ctx: typer.Context,
    run_dir: Annotated[
        Path, typer.Argument(help="A run directory written by `medclass train` (or a package, for --onnx).")
    ],
    checkpoint: Annotated[str, typer.Option(help="Which checkpoint: best or last.")] = "best",
    out: Annotated[Path | None, typer.Option(help="Package folder; default RUN_DIR/model.")] = None,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Also write model.onnx into the package, checked with onnxruntime.")
    ] = False,
) -> None:
    """Export a run's checkpoint as a model package (JSON + safetensors), optionally with an ONNX file."""
    from medclass.inference.locate import is_package
    from medclass.run_dir import RunDir, check_checkpoint

    check_checkpoint(checkpoint)
    if not is_package(run_dir):
        RunDir.open(run_dir)  # a path that is no run is refused before the seconds of importing torch and timm
    from medclass.inference.package import ONNX_FILE, load_package, package_from_run

    if is_package(run_dir):  # a package already (an ensemble of a cv or seeds series, say): its ONNX file
        if not onnx or out is not None:
            raise UserError(f"{run_dir} is a model package already: add --onnx to write its ONNX file (no --out)")
        folder = run_dir
    else:
        folder = package_from_run(run_dir, checkpoint, out)
        console.print(f"model package: {folder}", highlight=False, soft_wrap=True)
    if onnx:
        from medclass.inference.onnx_export import export_onnx

        report = export_onnx(load_package(folder), folder / ONNX_FILE)
        console.print(
            f"ONNX: {report.path} (onnxruntime vs PyTorch on {report.images_checked} images: max abs difference "
            f"{report.max_abs_difference:.2e})",
            highlight=False, soft_wrap=True,
        )  # fmt: skip


@app.command()
@user_errors
def predict(
    ctx: typer.Context,
    model: ModelArgument,
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (searched recursively) or glob patterns.")],
    out: Annotated[
        Path | None, typer.Option(help="Results file: .csv or .json.  [default: predictions.csv in this folder]")
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Classes listed per image.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    tta: Annotated[bool, typer.Option("--tta", help="Average with the horizontally mirrored image.")] = False,
    calibrated: Annotated[
        bool, typer.Option("--calibrated", help="Apply the temperature and thresholds fitted on validation.")
    ] = False,
    heatmaps: Annotated[Path | None, typer.Option(help="Write Grad-CAM overlays (PNG) of the top class here.")] = None,
    method: Annotated[
        str, typer.Option(help="Heatmap method: hirescam, gradcam, gradcam++, layercam or eigencam.")
    ] = "hirescam",
    gate: GateOption = "warn",
    tracking_uri: TrackingOption = None,
    shard: Annotated[
        str | None,
        typer.Option(
            help="Score shard I of N only (a contiguous block of the sorted file list), e.g. 2/8; the tables of "
            "all N shards join with `medclass merge-predictions`.  [default out: predictions-I-of-N.csv]"
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Go on with an unfinished CSV --out: the files it holds are not scored again."),
    ] = False,
    workers: Annotated[
        int, typer.Option(min=0, max=32, help="Threads decoding the next batch while the model runs (0: none).")
    ] = 2,
) -> None:
    """Predict classes for new images; unreadable files are listed and the rest are still predicted. A CSV grows
    batch by batch: a stopped job goes on with --resume; --shard I/N splits an archive between N jobs."""
    from medclass.inference.archive import PredictionTable, parse_shard, shard_files
    from medclass.inference.locate import check_model_spec

    check_model_spec(model)  # the options are checked before the seconds of importing torch
    index, count = parse_shard(shard) if shard is not None else (1, 1)
    default_out = out is None
    if out is None:
        out = Path("predictions.csv" if shard is None else f"predictions-{index}-of-{count}.csv")
    if out.suffix.lower() not in (".csv", ".json"):
        raise UserError(f"--out {out}: give a .csv or .json file name")
    if (shard is not None or resume) and out.suffix.lower() != ".csv":
        raise UserError(f"--out {out}: --shard and --resume write a CSV that grows batch by batch; give a .csv name")
    from medclass.inference.predictor import (
        PredictionResult,
        check_tta,
        collect_images,
        iter_predictions,
        load_predictor,
        prediction_mode,
        progress_tracker,
        write_predictions,
    )
    from medclass.tasks import is_single_label

    predictor = load_predictor(model, tracking_uri)
    check_tta(predictor, tta)
    if heatmaps is not None:
        from medclass.inference.explain import why_no_heatmaps

        if why_no_heatmaps(predictor):
            raise UserError(f"--heatmaps: {why_no_heatmaps(predictor)}")
    mode = prediction_mode(predictor, gate, calibrated)
    single_label = is_single_label(predictor.task)
    files, missing = collect_images(inputs)
    todo = shard_files(files, index, count)
    summary = _Summary(missing)
    table = None
    if out.suffix.lower() == ".csv":
        k = max(1, min(top_k, len(predictor.classes)))
        settings = {"calibrated": calibrated, "tta": tta, "gate": mode, "top_k": k}
        table = PredictionTable.open(out, predictor, settings, files, (index, count), single_label, resume)
        if table.done:
            before = len(todo)
            todo = [f for f in todo if str(f) not in table.done]
            console.print(f"resuming {out}: {before - len(todo)} of {before} files done before, {len(todo)} to go",
                          highlight=False, soft_wrap=True)  # fmt: skip
    result = PredictionResult([], list(missing), predictor.description, calibrated, tta, mode)
    track = progress_tracker(len(todo))
    for predictions, skipped in iter_predictions(predictor, todo, batch_size, top_k, tta, calibrated, mode, workers):
        if table is not None:
            table.append(predictions, skipped)
        else:
            result.predictions += predictions
            result.unreadable += skipped
        summary.add(predictions, skipped)
        if heatmaps is not None:
            _write_heatmaps(predictor, predictions, heatmaps, method, summary)
        track(len(predictions) + len(skipped))
    track(0, done=True)
    if table is not None:
        table.finish()
    else:
        write_predictions(result, out, predictor.classes, single_label)
    summary.print(predictor.description, mode, gate, heatmaps, method)
    where = f"{out.resolve()} (the default; choose the file with --out)" if default_out else str(out)
    part = f" (shard {index}/{count}: {len(todo)} of {len(files)} files)" if shard is not None else ""
    console.print(f"{summary.predicted} image(s) predicted, {len(summary.unreadable)} skipped{part}: written to "
                  f"{where}", highlight=False, soft_wrap=True)  # fmt: skip
    if not summary.predicted and not (table is not None and table.state["scored"]):
        raise UserError("no image could be read (see the skipped list above)")


class _Summary:
    """What predict prints once the table is written: the first predictions, the gate's tally and the skipped
    files (kept small: an archive's predictions stream to the table, not into memory)."""

    def __init__(self, missing: list[dict[str, str]]) -> None:
        self.first: list = []
        self.predicted = 0
        self.unreadable = list(missing)
        self.judged = 0
        self.reasons: dict[str, int] = {}
        self.rejected = 0
        self.drawn = 0
        self.empty: list[tuple[str, str]] = []

    def add(self, predictions: list, skipped: list[dict[str, str]]) -> None:
        self.first += predictions[: 10 - len(self.first)]
        self.predicted += len(predictions)
        self.unreadable += skipped
        for p in predictions:
            if p.gate is None:
                continue
            self.judged += 1
            if not p.gate["accepted"]:
                self.rejected += 1
                for reason in p.gate["reason"].split("; "):
                    self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def print(self, model: str, mode: str, asked: str, heatmaps: Path | None, method: str) -> None:
        for p in self.first:
            top = ", ".join(f"{name} {prob:.3f}" for name, prob in p.top)
            flag = ""
            if p.gate is not None and not p.gate["accepted"]:
                flag = f" [bold red]{'refused' if asked == 'refuse' else 'flagged'}: {p.gate['reason']}[/]"
            console.print(f"{p.file}: [bold]{'|'.join(p.predicted) or '-'}[/] ({top}){flag}", highlight=False,
                          soft_wrap=True)  # fmt: skip
        if self.predicted > len(self.first):
            console.print(f"... and {self.predicted - len(self.first)} more", highlight=False)
        if mode == "none" and asked != "off":
            err_console.print(f"[bold yellow]note:[/] {model} has no gate: the images were not checked "
                              "(fit one with `medclass gate fit RUN`)", highlight=False, soft_wrap=True)  # fmt: skip
        elif self.judged:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items(), key=lambda kv: -kv[1]))
            action = "given no class" if asked == "refuse" else "predicted but flagged"
            console.print(f"gate: {self.judged - self.rejected} of {self.judged} image(s) accepted"
                          + (f"; {self.rejected} {action} ({detail})" if self.rejected else ""),
                          highlight=False, soft_wrap=True)  # fmt: skip
        if heatmaps is not None:
            for file, note in self.empty:
                err_console.print(f"[bold yellow]heatmap not drawn:[/] {file}: {note}", highlight=False,
                                  soft_wrap=True)  # fmt: skip
            console.print(f"heatmaps ({method}): {self.drawn} drawn, {len(self.empty)} without evidence: {heatmaps}",
                          highlight=False, soft_wrap=True)  # fmt: skip
        for item in self.unreadable:
            err_console.print(f"[bold yellow]skipped:[/] {item['file']}: {item['reason']}", highlight=False,
                              soft_wrap=True)  # fmt: skip


@app.command("merge-predictions")
@user_errors
def merge_predictions(
    parts: Annotated[list[Path], typer.Argument(help="The shards' tables (predict --shard I/N), in any order.")],
    out: Annotated[Path, typer.Option(help="The merged table (.csv).")] = Path("predictions.csv"),
) -> None:
    """Join the tables of `medclass predict --shard I/N` into the one table a single process would have written;
    refuses shards of different models, options or file lists, and names missing or unfinished ones."""
    from medclass.inference.archive import merge_tables

    merged = merge_tables(parts, out)
    console.print(f"{merged['scored']} image(s) from {len(parts)} shard(s), {len(merged['unreadable'])} skipped: "
                  f"written to {out}", highlight=False, soft_wrap=True)  # fmt: skip


def _write_heatmaps(predictor, predictions: list, folder: Path, method: str, summary: _Summary) -> None:
    from medclass.inference.explain import heatmaps as cam_maps
    from medclass.inference.explain import overlay, png_bytes
    from medclass.inference.predictor import decode
    from medclass.io import atomic_write_bytes

    folder.mkdir(parents=True, exist_ok=True)
    for p in predictions:
        if not p.top:  # refused by the gate
            continue
        image = decode(predictor, p.file)
        class_name = p.top[0][0]
        cams = cam_maps(predictor.package, image[None], [predictor.classes.index(class_name)], method)
        note = cams.note(0, class_name)
        if note is not None:
            summary.empty.append((p.file, note))
            continue
        legend = f"{method}: where the image raised the score of {class_name}"
        atomic_write_bytes(folder / f"{Path(p.file).stem}_{method}.png",
                           png_bytes(overlay(image, cams.maps[0]), legend=legend))  # fmt: skip
        summary.drawn += 1


@app.command()
@user_errors
def serve(
    ctx: typer.Context,
    model: ModelArgument,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest upload accepted, in MiB.")] = 20.0,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Largest image accepted, in pixels (width x height).")
    ] = 40_000_000,
    max_decode_mb: Annotated[
        float,
        typer.Option(
            min=1,
            help="Most memory one image may need to decode (16-bit and float images need more per "
            "pixel), in MiB; checked from the header.",
        ),
    ] = 256.0,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Uploads decoded and predicted at once.")] = 2,
    queue: Annotated[
        int, typer.Option(min=0, max=1024, help="Uploads that may wait for a slot; more get 503 with Retry-After.")
    ] = 8,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds for a whole request body to arrive (then 408).")
    ] = 60.0,
    idle_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a connection may wait before sending a complete request head.")
    ] = 10.0,
    gate: GateOption = "warn",
    tracking_uri: TrackingOption = None,
    max_batch: Annotated[
        int, typer.Option(min=1, max=256, help="Most images predicted in one pass (dynamic batching; 1: none).")
    ] = 16,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0, max=1000, help="How long the first image of a batch waits for others, in ms.")
    ] = 2.0,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes, each with the model and its share of the cores.")
    ] = 1,
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, GET /model, and a web page at /."""
    from medclass.inference.locate import check_model_spec

    check_model_spec(model)  # before the seconds of importing torch
    from medclass.inference.predictor import load_predictor
    from medclass.inference.serve import Batching
    from medclass.inference.serve import serve as run_server
    from medclass.inference.service_limits import ServiceLimits

    limits = ServiceLimits(
        max_upload_bytes=int(max_upload_mb * 2**20), max_pixels=max_pixels, max_decode_bytes=int(max_decode_mb * 2**20),
        concurrency=concurrency, queue=queue, body_timeout=body_timeout, idle_timeout=idle_timeout,
    )  # fmt: skip
    predictor = load_predictor(model, tracking_uri)
    console.print(f"serving {predictor.description} on http://{host}:{port}/", highlight=False, soft_wrap=True)
    console.print(f"limits: {limits.describe()}", highlight=False, soft_wrap=True)
    console.print(f"gate: {gate}" if predictor.gate else "gate: none (the model has no gate)", highlight=False)
    batching = Batching(max_batch, batch_wait_ms / 1000)
    console.print(f"batching: up to {max_batch} images per pass, waiting up to {batch_wait_ms:g} ms; "
                  f"{workers} worker process(es)" + (" (the limits apply to each)" if workers > 1 else ""),
                  highlight=False)  # fmt: skip
    run_server(predictor, host, port, limits, gate, batching, workers, model, tracking_uri)


@app.command()
@user_errors
def features(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A model package or run directory, or a backbone name (pretrained).")],
    target: TargetArgument,
    overrides: OverridesArgument = None,
    out: Annotated[Path | None, typer.Option(help="Output folder; default features/<experiment>-<model>.")] = None,
) -> None:
    """Embeddings of every split, then logistic regression, linear SVM, kNN (k=11) and random forest on them,
    tuned on val and scored on test, in a table beside the fine-tuned model."""
    config = data_config(target, overrides or [])
    from medclass.inference.features import run_features
    from medclass.metrics import METRICS

    quiet_lightning(ctx)
    folder = out or Path("features") / f"{config.experiment}-{Path(model).name.replace(':', '_')}"
    result = run_features(model, config.data, folder, config.seed)
    from rich.table import Table

    table = Table(title=f"classical baselines on {model} features (test split)", title_justify="left")
    table.add_column("classifier")
    metrics = METRICS.names("headline")
    for metric in metrics:
        table.add_column(metric, justify="right")
    for row in result.rows:
        table.add_row(row.name, *(f"{row.test[m]:.4f}" for m in metrics))
    if result.fine_tuned:
        table.add_row("fine-tuned network", *(f"{result.fine_tuned.get(m, float('nan')):.4f}" for m in metrics))
    console.print(table)
    console.print(f"features and tables: {folder}", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def register(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `medclass train`.")],
    name: Annotated[str, typer.Option(help="Registered model name in MLflow.")],
    tracking_uri: TrackingOption = None,
) -> None:
    """Register a run's model package in the MLflow model registry as a new version of NAME."""
    from medclass.run_dir import RunDir

    RunDir.open(run_dir)  # a path that is no run is refused before the seconds of importing torch and MLflow
    from medclass.inference.registry import register_run

    name, version, uri = register_run(run_dir, name, tracking_uri)
    console.print(f"registered models:/{name}/{version} in {uri}", highlight=False, soft_wrap=True)
