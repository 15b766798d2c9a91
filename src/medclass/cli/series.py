"""``medclass cv`` and ``medclass train --seeds``: several runs of one recipe, collected into one result."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medclass.cli.common import OverridesArgument, app, console, quiet_lightning, user_errors
from medclass.errors import UserError

SeedsOption = Annotated[
    str | None,
    typer.Option(help="Repeat with these training seeds, comma-separated (e.g. 1,2,3); mean ± SD over them."),
]


def parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: give whole numbers separated by commas, e.g. --seeds 1,2,3") from None
    if not seeds:
        raise UserError("--seeds is empty: give whole numbers separated by commas, e.g. --seeds 1,2,3")
    return seeds


def print_series(result) -> None:
    from medclass.cli.render import series_table
    from medclass.metrics import metric_label

    console.print(series_table(result))
    headline = result.headline
    stats = result.aggregate[headline["metric"]]
    spread = f" ± {stats['sd']:.4f}" if stats["sd"] is not None else ""
    console.print(
        f"headline: {metric_label(headline['metric'])} {stats['mean']:.4f}{spread} (mean ± SD over {headline['n']} "
        f"runs; why: {result.folder / 'summary.md'})",
        highlight=False,
        soft_wrap=True,
    )
    ensemble = result.ensemble
    if ensemble:
        own, members = ensemble["ensemble"]["metrics"], ensemble["members_mean_sd"]
        metric = headline["metric"]
        spread = members[metric]
        console.print(
            f"test split ({ensemble['n_test']} images): ensemble {metric_label(metric)} {own[metric]:.4f}; its "
            f"members {spread['mean']:.4f} ± {spread['sd'] or 0:.4f}; package: {ensemble['package']}",
            highlight=False,
            soft_wrap=True,
        )
        for note in ensemble["ensemble"].get("weak", []):
            console.print(f"ensemble: {note}", highlight=False, soft_wrap=True, markup=False)
    console.print(f"series: {result.files['markdown']} (and summary.json, members.csv, members.png)",
                  highlight=False, soft_wrap=True)  # fmt: skip


@app.command()
@user_errors
def cv(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Experiment YAML file (see configs/).")] = None,
    overrides: OverridesArgument = None,
    folds: Annotated[int, typer.Option(help="Number of folds (k).")] = 5,
    fold: Annotated[
        list[int] | None,
        typer.Option(
            help="Run only this fold (1..k; repeatable): one process or cluster job per fold.", show_default=False
        ),
    ] = None,  # fmt: skip
    seeds: SeedsOption = None,
    fold_seed: Annotated[int, typer.Option(help="Seed of the fold assignment (the same for every fold).")] = 0,
    collect: Annotated[
        Path | None,
        typer.Option(help="Only collect: summarise the finished folds of this cv folder.", show_default=False),
    ] = None,
) -> None:
    """k-fold cross-validation over train+val (stratified, groups whole; the test split is not used): one run
    directory per fold under <output_dir>/<experiment>-cv<k>/, then mean ± SD and pooled out-of-fold metrics."""
    from medclass.config import load_config

    if collect is not None:
        if config is not None or overrides or fold:
            raise UserError("--collect reads a finished cv folder; give no -c, overrides or --fold with it")
        from medclass.experiments.series import collect_series

        return print_series(collect_series(collect))
    if config is None and not overrides:
        raise UserError("give an experiment config with -c (see configs/), or --collect FOLDER")
    experiment = load_config(config, overrides or [])
    from medclass.experiments.series import plan_cv, run_series

    plan = plan_cv(experiment, folds, parse_seeds(seeds), fold_seed)
    if fold:
        outside = sorted(k for k in fold if not 1 <= k <= folds)
        if outside:
            raise UserError(f"--fold {outside[0]} is outside 1..{folds} (--folds {folds})")
    quiet_lightning(ctx)
    result = run_series(plan, set(fold) if fold else None)
    if result is None:
        console.print(f"folds {', '.join(map(str, sorted(fold or [])))} done in {plan.folder.path}; the summary is "
                      f"written when every fold has finished (or: medclass cv --collect {plan.folder.path})",
                      highlight=False, soft_wrap=True)  # fmt: skip
        return
    print_series(result)
