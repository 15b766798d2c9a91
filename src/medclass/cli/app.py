"""The ``medclass`` command: parse arguments, call the Python API, print results. No logic lives here."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

from medclass.cli.common import (
    ConfigOption,
    OverridesArgument,
    TargetArgument,
    app,
    configure_logging,
    console,
    data_config,
    err_console,
    quiet_lightning,
    user_errors,
)
from medclass.cli.series import SeedsOption, parse_seeds, print_series
from medclass.errors import UserError


def _version_callback(value: bool) -> None:
    if value:
        from medclass import __version__

        console.print(f"medclass {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Show other libraries' messages (Lightning, ONNX, MLflow, transformers) and the causes of errors.",
        ),
    ] = False,
) -> None:
    ctx.obj = {"verbose": verbose}
    configure_logging(verbose)


@app.command()
@user_errors
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Experiment YAML file (see configs/).")] = None,
    overrides: OverridesArgument = None,
    resume: Annotated[Path | None, typer.Option(help="Continue this run directory from its last checkpoint.")] = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Choose data, model and sizes at prompts.")
    ] = False,
    seeds: SeedsOption = None,
) -> None:
    """Train a model, keep the best validation epoch, and evaluate it on the held-out test split."""
    from medclass.config import load_config

    if interactive:
        from medclass.cli.guided import guided_config

        config, overrides = guided_config(console, config, overrides or [])
    if resume is not None:
        if config is not None or overrides:
            raise UserError("--resume continues a run with its own config.yaml; give no -c or overrides with it")
    elif config is None and not overrides:
        raise UserError("give an experiment config with -c (see configs/), --resume RUN_DIR, or --interactive")
    else:
        experiment = load_config(config, overrides or [])  # config mistakes surface before the heavy imports
    if seeds is not None:
        if resume is not None:
            raise UserError("--seeds starts new runs; to continue a stopped series run the same command again")
        from medclass.experiments.series import plan_seeds, run_series

        plan = plan_seeds(experiment, parse_seeds(seeds))
        quiet_lightning(ctx)
        return print_series(run_series(plan))
    from medclass.cli.render import metrics_table, result_notes
    from medclass.experiments import resume_experiment, run_experiment
    from medclass.metrics import metric_label

    quiet_lightning(ctx)
    result = resume_experiment(resume) if resume is not None else run_experiment(experiment)
    if result is None:  # an extra process of a distributed run: rank 0 reports
        return
    console.print(metrics_table(result.test))
    for note in result_notes(result.test):
        console.print(note, highlight=False, soft_wrap=True, markup=False)
    console.print(
        f"best epoch {result.best_epoch} ({metric_label(result.monitor)} {result.best_score:.4f}) | "
        f"{result.duration_s / 60:.1f} min | run directory: {result.run_dir}",
        highlight=False,
        soft_wrap=True,
    )
    if result.gate is not None:
        console.print(gate_line(result.gate), highlight=False, soft_wrap=True)


def _evaluate_robustness(path: Path, names: list[str], levels: tuple[int, ...], checkpoint: str, split: str) -> None:
    from medclass.cli.render import robustness_table
    from medclass.evaluation.robustness import evaluate_corruptions

    result = evaluate_corruptions(path, names, levels, checkpoint, split)
    console.print(robustness_table(result, levels))
    collapsed = result.collapsed()
    if collapsed:
        pairs = ", ".join(f"{r['corruption']} s{r['severity']}" for r in collapsed[:8])
        more = f" and {len(collapsed) - 8} more" if len(collapsed) > 8 else ""
        console.print(f"warning: the model collapses to one class under {pairs}{more} (balanced ACC in "
                      "robustness.md)", highlight=False, soft_wrap=True, markup=False)  # fmt: skip
    console.print(f"robustness: {result.files['markdown']} (and .csv, .png)", highlight=False, soft_wrap=True)


def _evaluate_ood(path: Path, foreign: list[str], checkpoint: str, split: str) -> None:
    from medclass.evaluation.ood import evaluate_ood
    from medclass.run_dir import RunDir

    if not RunDir.is_run_dir(path):
        raise UserError(f"--ood evaluates the gate of one run: {path} is not a run directory")
    result = evaluate_ood(path, foreign, checkpoint, split)
    clean = result["clean"]
    console.print(f"clean {split} images ({result['images']}): {clean['in_distribution']:.1%} look like the training "
                  f"images, {clean['quality_passed']:.1%} pass the quality check, {clean['accepted']:.1%} accepted",
                  highlight=False, soft_wrap=True)  # fmt: skip
    for f in result["foreign"]:
        console.print(f"{f['name']} ({f['images']} images): AUROC {f['auroc']:.3f}, FPR@95TPR {f['fpr95']:.3f}, "
                      f"flagged {f['flagged']:.1%}, detection accuracy {f['detection_accuracy']:.3f}, gate rejects "
                      f"{f['gate_rejected']:.1%}", highlight=False, soft_wrap=True)  # fmt: skip
    caught = ", ".join(f"{d['degradation']} {d['quality_caught']:.0%}" for d in result["degraded"])
    console.print(f"degraded {split} images caught by the quality check: {caught}", highlight=False, soft_wrap=True)
    console.print(f"gate evaluation: {result['files']['markdown']} (and .json, .png; in report.html)", highlight=False,
                  soft_wrap=True)  # fmt: skip


@app.command()
@user_errors
def evaluate(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(
            help="A run directory written by `medclass train`, a folder of runs to compare, or a model "
            "package (an ensemble too) with -c naming the data."
        ),
    ],  # fmt: skip
    checkpoint: Annotated[str, typer.Option(help="Which checkpoint: best or last.")] = "best",
    split: Annotated[str, typer.Option(help="Which split: test (default) or val.")] = "test",
    metric: Annotated[str, typer.Option(help="Comparing runs: the metric that names the best run.")] = "auc",
    bootstrap: Annotated[
        int | None, typer.Option(help="Bootstrap resamples for the intervals (0: none); default: the run's config.")
    ] = None,
    report: Annotated[bool, typer.Option(help="Write the plots and the HTML/Markdown report.")] = True,
    subgroup: Annotated[
        list[str] | None,
        typer.Option(
            help="Results by subgroup (repeat for several): a label-CSV column or DICOM keyword (PatientSex, "
            "Manufacturer), or COLUMN:EDGES for bands of a number (PatientAge:0,40,60); replaces the run's "
            "evaluation.subgroups.",
            show_default=False,
        ),
    ] = None,
    corruptions: Annotated[
        str | None,
        typer.Option(
            help="Robustness instead: the test split under image corruptions (all, or names separated by commas: "
            "gaussian_noise, speckle_noise, impulse_noise, gaussian_blur, brightness_up, brightness_down, "
            "contrast_down, gamma, jpeg, pixelate).",
            show_default=False,
        ),
    ] = None,
    severities: Annotated[str, typer.Option(help="With --corruptions: severities 1-5, comma-separated.")] = "1,2,3,4,5",
    ood: Annotated[
        list[str] | None,
        typer.Option(
            help="The gate instead: how well it flags a foreign image set (a folder, or an experiment YAML whose test "
            "split is used, optionally as NAME=PATH; repeat for several) and the data builder's degraded test images.",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="A model package: the experiment YAML whose data it is evaluated on.",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    external: Annotated[
        list[str] | None,
        typer.Option(
            help="External validation instead (repeat for several): NAME=PATH, PATH a folder of class folders, a "
            "pre-split folder, a label CSV or an experiment YAML; every labelled image is scored, copies of training "
            "images left out, results in external/NAME/ and the run's report.",
            show_default=False,
        ),
    ] = None,
    keep_duplicates: Annotated[
        bool, typer.Option(help="With --external: keep copies of training or validation images in the metrics.")
    ] = False,
) -> None:
    """Evaluate a run on its held-out split: metrics with 95% intervals, per-class table, calibration, plots and an
    HTML report. Given a folder of runs, evaluate each and write a comparison naming the best. With --external,
    score a run, package, ensemble or .onnx model on data from elsewhere."""
    from medclass.config.data import check_split
    from medclass.metrics import check_metric
    from medclass.run_dir import RunDir, check_checkpoint

    # The options first: reading a run imports torch and Lightning (seconds), a typo needs none of that.
    check_metric(metric)
    check_checkpoint(checkpoint)
    check_split(split)
    if not path.exists():
        raise UserError(f"{path} does not exist: give a run directory or a folder of runs")
    if external:
        from medclass.config.data import external_spec

        for spec in external:
            name, where = external_spec(spec)
            if not where.exists():
                raise UserError(f"--external {spec}: {where} does not exist; give NAME=PATH with a folder of class "
                                "folders, a label CSV or an experiment YAML")  # fmt: skip
    if corruptions is not None:
        from medclass.data.corruptions import parse_corruptions, parse_severities

        names, levels = parse_corruptions(corruptions), parse_severities(severities)
        if not RunDir.is_run_dir(path):
            raise UserError(f"--corruptions evaluates one run: {path} is not a run directory")
        quiet_lightning(ctx)
        return _evaluate_robustness(path, names, levels, checkpoint, split)
    settings: dict[str, Any] = {"report": report}
    if bootstrap is not None:
        from medclass.config import EvaluationConfig, validate_config

        settings["bootstrap"] = validate_config({"bootstrap": bootstrap}, "--bootstrap", EvaluationConfig).bootstrap
    if subgroup:
        from medclass.config import EvaluationConfig, validate_config

        specs = [_subgroup_option(text) for text in subgroup]
        settings["subgroups"] = [
            s.model_dump() for s in validate_config({"subgroups": specs}, "--subgroup", EvaluationConfig).subgroups
        ]
    from medclass.cli.render import comparison_table, metrics_table, result_notes
    from medclass.evaluation import compare_runs, evaluate_run

    if ood is not None:
        quiet_lightning(ctx)
        return _evaluate_ood(path, ood, checkpoint, split)
    quiet_lightning(ctx)
    if external:
        return _evaluate_external(path, external, keep_duplicates, settings)
    from medclass.inference.package import is_package

    if is_package(path):
        return _evaluate_package(path, config, split, settings)
    if config is not None:
        raise UserError(f"-c names the data for a model package; {path} is a run directory or a folder of runs")
    if RunDir.is_run_dir(path):
        result = evaluate_run(path, checkpoint=checkpoint, split=split, overrides=settings)
        console.print(metrics_table(result))
        for note in result_notes(result):
            console.print(note, highlight=False, soft_wrap=True, markup=False)
        return
    comparison = compare_runs(path, metric, checkpoint, split, settings)
    console.print(comparison_table(comparison))
    for dataset, row in comparison.best.items():
        console.print(f"best on {dataset}: {row.run_dir} ({row.model}, {metric} {row.metrics[metric]:.4f})",
                      highlight=False, soft_wrap=True)  # fmt: skip
    console.print(f"comparison: {comparison.files['markdown']} (and .csv, .png)", highlight=False, soft_wrap=True)
    if not comparison.best:
        raise UserError(f"none of the {len(comparison.rows)} runs under {path} could be evaluated (see above)")


def _evaluate_external(path: Path, specs: list[str], keep_duplicates: bool, options: dict[str, Any]) -> None:
    """``--external``: the run's evaluation settings (a package's: the defaults) with --bootstrap/--subgroup."""
    from medclass.cli.render import external_table, metrics_table, result_notes
    from medclass.config import EvaluationConfig, validate_config
    from medclass.inference.external import evaluate_external
    from medclass.run_dir import RunDir

    base = RunDir(path).load_config().evaluation.model_dump() if RunDir.is_run_dir(path) else {}
    options = {k: v for k, v in options.items() if k != "report"}
    settings = validate_config({**base, **options}, "evaluation", EvaluationConfig)
    for spec in specs:
        result = evaluate_external(path, spec, keep_duplicates, settings)
        summary = result.summary
        console.print(metrics_table(result.evaluation))
        console.print(external_table(summary))
        console.print(f"{summary['name']}: {summary['class_note']} {summary['duplicates']['summary']}",
                      highlight=False, soft_wrap=True, markup=False)  # fmt: skip
        for item in summary["duplicates"]["of_training"][:10]:
            sign = "=" if item["kind"] == "identical" else "≈"
            said = f"{item['image']} {sign} {', '.join(item['matches'])}" + ("" if sign == "=" else " (near-duplicate)")
            console.print(f"  {'copy' if keep_duplicates else 'left out'}: {said}", highlight=False, soft_wrap=True,
                          markup=False)  # fmt: skip
        for note in result_notes(result.evaluation):
            console.print(note, highlight=False, soft_wrap=True, markup=False)
        for warning in summary["warnings"]:
            console.print(f"warning: {warning}", highlight=False, soft_wrap=True, markup=False)
        gate = summary.get("gate")
        if gate:
            console.print(f"gate: {gate['accepted']:.1%} of the external images accepted", highlight=False)
        cal = summary["calibration"]
        slope = "undefined" if cal.get("slope") is None else f"{cal['slope']:.3f}"
        intercept = "undefined" if cal.get("intercept") is None else f"{cal['intercept']:.3f}"
        ece = "n/a" if cal.get("ece") is None else f"{cal['ece']:.4f}"
        console.print(f"calibration on the external set: ECE {ece}, intercept {intercept} (0 is perfect), slope "
                      f"{slope} (1 is perfect)", highlight=False, soft_wrap=True)  # fmt: skip
        shown = result.files.get("run_report", result.files["html"])
        console.print(f"external: {result.folder} (metrics.json, predictions.csv, report.html); report: {shown}",
                      highlight=False, soft_wrap=True, markup=False)  # fmt: skip


def _subgroup_option(text: str) -> dict[str, Any]:
    """--subgroup COLUMN or COLUMN:EDGES -> a subgroup config entry."""
    column, _, edges = text.partition(":")
    if not edges:
        return {"column": column.strip()}
    try:
        bins = [float(edge) for edge in edges.split(",") if edge.strip()]
    except ValueError:
        raise UserError(
            f"--subgroup {text!r}: after the colon give numbers separated by commas, e.g. PatientAge:0,40,60"
        ) from None
    return {"column": column.strip(), "bins": bins}


def _evaluate_package(path: Path, config: Path | None, split: str, settings: dict[str, Any]) -> None:
    from medclass.cli.render import metrics_table, result_notes
    from medclass.config import load_config, validate_config
    from medclass.inference.assess import evaluate_package

    if config is None:
        raise UserError(f"{path} is a model package: name the data to evaluate it on with -c CONFIG")
    experiment = load_config(config)
    evaluation = validate_config({**experiment.evaluation.model_dump(), **settings}, "evaluation",
                                 type(experiment.evaluation))  # fmt: skip
    result = evaluate_package(path, experiment.data, split, evaluation, seed=experiment.seed)
    console.print(metrics_table(result))
    for note in result_notes(result):
        console.print(note, highlight=False, soft_wrap=True, markup=False)
    console.print(f"evaluation: {result.files['metrics'].parent} (metrics.json, predictions.csv)", highlight=False,
                  soft_wrap=True)  # fmt: skip


@app.command()
@user_errors
def benchmark(ctx: typer.Context, config: ConfigOption, overrides: OverridesArgument = None) -> None:
    """Train and evaluate every model of the config's models: list on the same split; write a leaderboard."""
    from medclass.config import load_config

    experiment = load_config(config, overrides or [])
    from medclass.cli.render import leaderboard_table
    from medclass.experiments.benchmark import run_benchmark

    quiet_lightning(ctx)
    result = run_benchmark(experiment)
    console.print(leaderboard_table(result.rows, experiment.checkpoint.monitor))
    console.print(f"leaderboard: {result.files['markdown']} (and .csv, .png)", highlight=False, soft_wrap=True)
    if not any(row.status == "ok" for row in result.rows):
        raise UserError(f"no model of the benchmark trained ({len(result.rows)} failed); the reasons are listed above")


@app.command("config")
@user_errors
def show_config(ctx: typer.Context, config: ConfigOption, overrides: OverridesArgument = None) -> None:
    """Validate a config with its overrides and print the resolved result (all defaults filled in)."""
    from medclass.config import dump_config, load_config

    console.print(dump_config(load_config(config, overrides or [])), highlight=False, markup=False)


data_app = typer.Typer(help="Look at, describe and build datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
gate_app = typer.Typer(help="The gate in front of a model: out-of-distribution and image-quality checks.",
                       no_args_is_help=True)  # fmt: skip
app.add_typer(gate_app, name="gate")


@gate_app.command("fit")
@user_errors
def gate_fit(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `medclass train`.")],
    checkpoint: Annotated[str, typer.Option(help="Which checkpoint: best or last.")] = "best",
) -> None:
    """Fit the gate of a run (training does it; this is for older runs, or again): an out-of-distribution score on
    the train split's features with its threshold on validation, and image-quality limits from the train images.
    The run's model package is exported again with it."""
    from medclass.run_dir import RunDir, check_checkpoint

    check_checkpoint(checkpoint)
    RunDir.open(run_dir)  # a path that is no run is refused before the seconds of importing torch and Lightning
    from medclass.evaluation.gate import fit_gate
    from medclass.inference.package import is_package, package_from_run

    quiet_lightning(ctx)
    gate = fit_gate(run_dir, checkpoint)
    console.print(gate_line(gate), highlight=False, soft_wrap=True)
    run = RunDir(run_dir)
    if is_package(run.package_dir(checkpoint)):
        console.print(f"model package with the gate: {package_from_run(run_dir, checkpoint)}", highlight=False,
                      soft_wrap=True)  # fmt: skip


def gate_line(gate: dict[str, Any]) -> str:
    if "not_fitted" in gate:
        return f"gate: not fitted ({gate['not_fitted']}); predict and serve will not check images"
    val = gate["val"]
    return (f"gate: fitted on {gate['fitted_on']['train']} training images; on the {gate['fitted_on']['val']} "
            f"validation images {val['in_distribution']:.1%} look like the training images (aim {gate['accept']:.0%}), "
            f"{val['quality_passed']:.1%} pass the quality check, {val['accepted']:.1%} are accepted")  # fmt: skip


@data_app.command("inspect")
@user_errors
def data_inspect(
    ctx: typer.Context,
    target: TargetArgument,
    overrides: OverridesArgument = None,
    out: Annotated[Path | None, typer.Option(help="Output folder; default: inspect/<dataset>.")] = None,
) -> None:
    """Counts per class and split (table + chart), sample grids, sizes and modes, duplicates, unreadable files."""
    config = data_config(target, overrides or [])
    from medclass.cli.render import inspection_tables
    from medclass.data.inspect import inspect_dataset

    out_dir = out or Path("inspect") / config.experiment
    inspection = inspect_dataset(config.data, out_dir)
    for table in inspection_tables(inspection):
        console.print(table)
    for warning in inspection.warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(
        f"written to {out_dir}: " + ", ".join(Path(p).name for p in inspection.files.values()), soft_wrap=True
    )


@data_app.command("stats")
@user_errors
def data_stats(ctx: typer.Context, target: TargetArgument, overrides: OverridesArgument = None) -> None:
    """Per-channel mean/std of the training split at the training size, stored for data.normalization: dataset."""
    config = data_config(target, overrides or [])
    from medclass.data import load_dataset
    from medclass.data.cache import cache_root
    from medclass.data.stats import dataset_stats

    dataset = load_dataset(config.data)
    stats = dataset_stats(dataset, cache_root(config.data.cache_dir))
    mean = ", ".join(f"{v:.4f}" for v in stats["mean"])
    std = ", ".join(f"{v:.4f}" for v in stats["std"])
    console.print(
        f"{dataset.name}: training split, {stats['n_images']} images at {config.data.input_size} px", highlight=False
    )
    console.print(f"mean: [{mean}]\nstd:  [{std}]", highlight=False)
    how = "read from" if stats.get("stored") else "stored in"
    console.print(f"{how} {stats['path']}", highlight=False, soft_wrap=True)
    console.print("Use them with `data.normalization: dataset` (read from that file), or copy them into "
                  "data.mean / data.std.", highlight=False, soft_wrap=True)  # fmt: skip


@data_app.command("build")
@user_errors
def data_build(
    ctx: typer.Context,
    recipe: Annotated[Path, typer.Argument(help="A build recipe YAML (see configs/build/).")],
    overrides: OverridesArgument = None,
) -> None:
    """Merge sources into categories, synthesise a LOW_QUALITY class, write an image-folder dataset + manifest."""
    from medclass.data.build import build_dataset, load_recipe

    result = build_dataset(load_recipe(recipe, overrides or []))
    from rich.table import Table

    title = f"built {result.output}"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("category")
    table.add_column("images", justify="right")
    for category, count in result.counts.items():
        table.add_row(category, str(count))
    console.print(table)
    if result.reused_for_low_quality:
        err_console.print(
            f"[bold yellow]warning:[/] {result.reused_for_low_quality} degraded image(s) come from originals also kept "
            "clean; train with the manifest's group column to keep each pair in one split",
            highlight=False, soft_wrap=True,
        )  # fmt: skip
    if result.skipped:
        err_console.print(f"[bold yellow]warning:[/] {len(result.skipped)} file(s) skipped (see build.json)")
    console.print(f"manifest: {result.manifest}", highlight=False, soft_wrap=True)


from medclass.cli import memory as _memory  # noqa: E402,F401 -- registers memory
from medclass.cli import series as _series  # noqa: E402,F401 -- registers cv
from medclass.cli import tune as _tune  # noqa: E402,F401 -- registers tune
from medclass.cli import use as _use  # noqa: E402,F401 -- registers export, predict, serve, features, register


def main() -> None:
    # Lightning 2.6 calls a torch API that newer torch deprecates; the warning is noise for our users.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    app()


if __name__ == "__main__":
    sys.exit(main())
