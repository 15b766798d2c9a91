"""Rich renderings of results for the terminal."""

from __future__ import annotations

from rich.table import Table

from medclass.data.inspect import Inspection
from medclass.evaluation.compare import gap_cells
from medclass.evaluation.result import EvaluationResult
from medclass.evaluation.subgroups import gap_sentence
from medclass.metrics import metric_label
from medclass.wording import interval_text


def metrics_table(result: EvaluationResult) -> Table:
    title = f"{result.split} split, {result.checkpoint} checkpoint (epoch {result.epoch})"
    if result.checkpoint == "external":
        title = f"{result.split} set (every image but copies of training images)"
    if result.checkpoint == "package":
        title = f"{result.split} split, {'ensemble' if result.extra.get('ensemble') else 'model'} package"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("metric")
    table.add_column("value", justify="right")
    confidence = result.extra.get("bootstrap", {}).get("confidence", 0.95)
    with_intervals = bool(result.intervals or result.undefined_intervals)
    if with_intervals:
        table.add_column(f"{confidence:.0%} CI", justify="right")
    for name, value in result.metrics.items():
        cells = [metric_label(name), f"{value:.4f}"]
        if with_intervals:
            cells.append(interval_text(result.intervals.get(name), 4, dash=" - ",
                                       computed=name in result.undefined_intervals))  # fmt: skip
        table.add_row(*cells)
    table.caption = f"{result.n_samples} images of {result.extra.get('dataset', 'the dataset')}"
    return table


def external_table(summary: dict) -> Table:
    """Internal test and external side by side, with the differences (external/NAME/metrics.json)."""
    title = f"internal test vs external {summary['name']}"
    table = Table(title=title, title_justify="left", min_width=len(title))
    for column in ("measure", "internal", "external", "external - internal"):
        table.add_column(column, justify="left" if column == "measure" else "right", overflow="fold")

    def cell(row: dict, side: str, signed: bool = False) -> str:
        value = row[side]
        if value is None:
            return "n/a"
        shown = interval_text(row[f"{side}_ci"], 3, dash="-", computed=side in row.get("undefined", {}))
        return (f"{value:+.3f}" if signed else f"{value:.3f}") + (f" ({shown})" if shown else "")

    for row in summary["side_by_side"]:
        table.add_row(row["label"], cell(row, "internal"), cell(row, "external"), cell(row, "difference", True))
    table.caption = summary["internal"]["note"]
    return table


def result_notes(result: EvaluationResult) -> list[str]:
    """Lines printed under the metrics table: positive class, operating point, calibration, warnings, report."""
    notes = [str(note) for note in result.extra.get("weak", [])]
    positive = result.extra.get("positive_class")
    if positive:
        ci = positive.get("ci") or {}

        def value(name: str) -> str:
            v = positive.get(name)
            if v is None:
                return "n/a"
            bounds = interval_text(ci.get(name), 3, dash="-", computed=bool(ci))
            return f"{v:.3f} ({bounds})" if bounds else f"{v:.3f}"

        notes.append(
            f"positive class “{positive['class']}” (n={positive['support']}), at P > 0.5: sensitivity "
            f"{value('sensitivity')}, specificity {value('specificity')}, PPV {value('ppv')}, NPV {value('npv')}, "
            f"AP {value('ap')}"
        )
    if result.operating_point:
        op = result.operating_point
        counts = op.get("counts")

        def share(key: str) -> str:
            v = op.get(key)
            bounds = interval_text(op.get(f"{key}_ci"), 3, dash="-")
            return "n/a" if v is None else (f"{v:.3f} ({bounds})" if bounds else f"{v:.3f}")

        found = (f" (TP {counts['tp']}, FP {counts['fp']}, FN {counts['fn']}, TN {counts['tn']}); PPV {share('ppv')}, "
                 f"NPV {share('npv')}") if counts else ""  # fmt: skip
        notes.append(
            f"operating threshold P({op['positive_class']}) > {op['threshold']:.3f} (chosen on validation: "
            f"{op.get('rule_words') or op['rule']}): sensitivity {share('sensitivity')}, specificity "
            f"{share('specificity')}{found}"
        )
    if result.calibration:
        cal = result.calibration
        verdict = "kept" if cal["applied"] else f"not applied: {cal['reason']}"
        notes.append(f"calibration: {result.split} ECE {cal['ece']:.4f}; temperature {cal['fitted_temperature']:.3f} "
                     f"(fitted on validation, {verdict}) gives {result.split} ECE {cal['ece_scaled']:.4f}")  # fmt: skip
    for entry in result.extra.get("subgroups") or []:
        sizes = ", ".join(f"{g['value']} {g['n']}" for g in entry["subgroups"])
        notes.append(f"subgroups by {gap_sentence(entry)} Images: {sizes}.")
    notes += [f"interval undefined: {note}" for note in result.undefined_notes()]
    notes += [f"warning: {w}" for w in result.extra.get("warnings", [])]
    if "html" in result.files:
        notes.append(f"report: {result.files['html']}")
    return notes


def inspection_tables(inspection: Inspection) -> list[Table]:
    splits = list(inspection.counts)
    counts = Table(title=f"{inspection.name}: {inspection.task}, {inspection.layout}", title_justify="left",
                   caption=f"split: {inspection.split_method}")  # fmt: skip
    counts.add_column("class")
    for split in splits:
        counts.add_column(split, justify="right")
    counts.add_column("total", justify="right")
    for name in inspection.classes:
        values = [inspection.counts[s].get(name, 0) for s in splits]
        counts.add_row(name, *map(str, values), str(sum(values)))
    totals = [sum(inspection.counts[s].values()) for s in splits]
    counts.add_row("total", *map(str, totals), str(sum(totals)), style="bold")

    facts = Table(title="files", title_justify="left", show_header=False)
    facts.add_column("what")
    facts.add_column("value")
    facts.add_row("sizes (w x h)", ", ".join(f"{k}: {v}" for k, v in list(inspection.sizes.items())[:6]))
    facts.add_row("modes", ", ".join(f"{k}: {v}" for k, v in inspection.modes.items()))
    facts.add_row(
        "duplicate groups", f"{len(inspection.duplicates)} ({len(inspection.cross_split_duplicates)} across splits)"
    )
    facts.add_row("skipped / unreadable", f"{len(inspection.skipped)} / {len(inspection.unreadable)}")
    return [counts, facts]


def leaderboard_table(rows: list, metric: str) -> Table:
    from medclass.evaluation.leaderboard import ranked

    table = Table(title="benchmark: test split", title_justify="left")
    for column in ("model", "ACC", "AUC", "F1", "params", "img/s", "train min", "status"):
        if column in ("model", "status"):
            table.add_column(column, overflow="fold")
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for row in ranked(rows, metric):
        m = row.metrics
        table.add_row(
            row.label, *(f"{m[k]:.4f}" if k in m else "" for k in ("acc", "auc", "f1_macro")),
            f"{row.parameters / 1e6:.1f}M" if row.parameters else "",
            f"{row.images_per_second:.0f}" if row.images_per_second else "",
            f"{row.train_minutes:.1f}" if row.train_minutes is not None else "",
            row.status if row.status == "ok" else f"failed: {row.error}",
        )  # fmt: skip
    return table


def comparison_table(comparison) -> Table:
    metric = comparison.metric
    datasets = {row.dataset for row in comparison.rows if row.status == "ok"}
    failures = any(row.status != "ok" for row in comparison.rows)
    table = Table(title=f"runs compared by {metric}", title_justify="left", caption="* best on its dataset")
    table.add_column("run", overflow="fold")
    if len(datasets) > 1:
        table.add_column("dataset", overflow="fold")
    table.add_column("model", overflow="fold")
    for column in (metric, "95% CI", "ACC"):
        table.add_column(column, justify="right", no_wrap=True)
    with_subgroups = any(row.subgroups for row in comparison.rows)
    if with_subgroups:
        table.add_column(f"lowest subgroup ({metric})", overflow="fold")
        table.add_column("subgroup gap", justify="right", no_wrap=True)
    if failures:
        table.add_column("status", overflow="fold")
    for row in comparison.rows:
        interval = row.intervals.get(metric)
        cells = [f"{row.run_dir}{' *' if comparison.best.get(row.dataset) is row else ''}"]
        if len(datasets) > 1:
            cells.append(row.dataset)
        cells += [
            row.model,
            f"{row.metrics[metric]:.4f}" if metric in row.metrics else "",
            interval_text(interval, 4, dash="-", computed=metric in row.metrics and metric in row.undefined),
            f"{row.metrics['acc']:.4f}" if "acc" in row.metrics else "",
        ]
        if with_subgroups:
            cells += list(gap_cells(row, metric))
        if failures:
            cells.append("ok" if row.status == "ok" else f"failed: {row.error}")
        table.add_row(*cells)
    return table


def robustness_table(result, severities: tuple[int, ...]) -> Table:
    """Test AUC per corruption and severity, the clean value first (ACC too in robustness.md)."""
    table = Table(title=f"{result.split} AUC under corruptions (ACC and balanced ACC in robustness.md; † collapsed "
                  "to one class)", title_justify="left")  # fmt: skip
    for column in ("corruption", "clean", *(f"s{s}" for s in severities)):
        table.add_column(column, justify="left" if column == "corruption" else "right")
    names = list(dict.fromkeys(r["corruption"] for r in result.rows))
    for name in [*names, "mean"]:
        values = [result.mean_at(s, "auc") if name == "mean" else result.value(name, s, "auc") for s in severities]
        marks = ["" if name == "mean" or not result.row(name, s)["collapsed"] else " †" for s in severities]
        table.add_row(name, f"{result.clean['auc']:.3f}", *(f"{v:.3f}{m}" for v, m in zip(values, marks, strict=True)),
                      style="bold" if name == "mean" else None)  # fmt: skip
    return table


def series_table(result) -> Table:
    """A series (cross-validation folds or seeds): one row per member, then mean +- SD and the pooled values."""
    from medclass.metrics import METRICS

    names = list(METRICS.names("headline"))
    split = "out-of-fold" if result.kind == "cv" else "test"
    title = f"{'cross-validation' if result.kind == 'cv' else 'repeated seeds'}: {split} metrics"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("member")
    table.add_column("n", justify="right")
    for name in names:
        table.add_column(metric_label(name).replace(" (MedMNIST)", ""), justify="right")
    for row in result.rows:
        cells = [f"{row['metrics'][m]:.4f}" if m in row["metrics"] else "" for m in names]
        table.add_row(row["name"], str(row["n"]), *cells)
    mean_sd = []
    for name in names:
        stats = result.aggregate[name]
        if stats["mean"] is None:
            mean_sd.append("")
        else:
            mean_sd.append(f"{stats['mean']:.3f}" + (f"±{stats['sd']:.3f}" if stats["sd"] is not None else ""))
    table.add_row("mean ± SD", "", *mean_sd, style="bold", end_section=True)
    for pooled in result.pooled:
        values = [pooled["metrics"].get(name) for name in names]
        table.add_row(f"pooled s{pooled['seed']}", str(pooled["n"]),
                      *("" if v is None else f"{v:.4f}" for v in values))  # fmt: skip
        if pooled["intervals"]:
            bounds = [pooled["intervals"].get(name) for name in names]
            table.add_row(f"  {pooled['confidence']:.0%} CI", "",
                          *(interval_text(b, 3, dash="-", computed=name in pooled["intervals"])
                            for name, b in zip(names, bounds, strict=True)))  # fmt: skip
    return table
