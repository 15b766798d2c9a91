"""A real (short) BloodMNIST run with TensorBoard and MLflow on: its metrics, report and plots, what the trackers
recorded (read back from their files), comparison of several runs, and the evaluate command's bad inputs."""

from __future__ import annotations

import json
import re
import shutil
import socket
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medclass import load_config, run_experiment
from medclass.config import EvaluationConfig
from medclass.evaluation import evaluate_run
from medclass.evaluation.compare import compare_runs

REPO = Path(__file__).resolve().parents[2]
BLOOD = REPO / "configs" / "bloodmnist.yaml"
# copies: BloodMNIST's published split holds identical images in two splits (shown as thumbnails under the warning)
PLOTS = ("confusion_counts", "confusion_normalized", "roc_pr", "reliability", "training_curves", "worst_images",
         "copies")  # fmt: skip


def blood_config(out: Path, *extra: str):
    return load_config(
        BLOOD,
        [f"output_dir={out}", "trainer.max_epochs=2", "trainer.limit_train_batches=8", "trainer.progress_bar=false",
         "evaluation.bootstrap=200", "gate.fit=false", *extra],
    )  # fmt: skip


@pytest.fixture(scope="module")
def blood(module_tmp: Path):
    out = module_tmp
    result = run_experiment(blood_config(out, "tracking.tensorboard=true", "tracking.mlflow=true"))
    return result, out


def test_metrics_json_has_every_metric_interval_and_class(blood) -> None:
    result, _ = blood
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    metrics = saved["metrics"]
    for name in ("acc", "balanced_acc", "auc", "auc_macro_ovr", "auc_weighted_ovr", "top3_acc", "top5_acc",
                 "f1_macro", "f1_weighted", "kappa", "mcc", "ece", "brier"):  # fmt: skip
        assert name in metrics and np.isfinite(metrics[name]), name
        assert name in saved["definitions"]
    for name, (low, high) in saved["intervals"].items():
        assert low <= metrics[name] <= high, name
    assert set(saved["intervals"]) == {"acc", "auc", "f1_macro", "balanced_acc"}
    assert {k: saved["bootstrap"][k] for k in ("resamples", "confidence", "seed")} == {
        "resamples": 200, "confidence": 0.95, "seed": 42,
    }  # fmt: skip
    assert saved["interval_methods"] == {
        "acc": "wilson",
        "auc": "percentile bootstrap",
        "f1_macro": "percentile bootstrap",
        "balanced_acc": "percentile bootstrap",
    }
    assert "intervals_undefined" not in saved  # a real model on 3421 images: every interval exists
    rows = saved["per_class"]
    assert len(rows) == 8 and sum(row["support"] for row in rows) == 3421 == saved["n_samples"]
    assert rows[0]["class"] == "basophil"
    for row in rows:
        for column in ("sensitivity", "specificity", "npv", "auc"):
            assert 0.0 <= row[column] <= 1.0
            low, high = row["ci"][column]
            assert low <= row[column] <= high and high > low
    calibration = json.loads((result.run_dir / "calibration.json").read_text())
    assert calibration["fitted_on"] == "val" and calibration["temperature"] == saved["calibration"]["temperature"] > 0
    assert saved["operating_point"] is None  # multi-class: no binary operating point


def test_report_is_self_contained_with_every_plot(blood) -> None:
    result, _ = blood
    report = result.run_dir / "report"
    for name in PLOTS:
        with Image.open(report / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) > 200, name
    html = (report / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(PLOTS)
    assert not re.search(r"""(src|href)=["']https?://""", html), "the report must not load anything from the network"
    for text in ("resnet18", "95% CI", "basophil", "platelet", "Cohen's kappa", "temperature", "official MedMNIST"):
        assert text in unescape(html), text
    summary = (report / "summary.md").read_text()
    assert "| basophil |" in summary and "](reliability.png)" in summary


def test_mlflow_received_params_epoch_metrics_report_and_model(blood) -> None:
    from mlflow import MlflowClient

    result, out = blood
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("bloodmnist")
    (run,) = client.search_runs([experiment.experiment_id], f"tags.run_dir = '{result.run_dir.resolve()}'")
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.lr"] == "0.002" and run.data.params["model.name"] == "resnet18"
    history = client.get_metric_history(run.info.run_id, "val/auc")
    assert len(history) == 2  # one value per epoch
    saved = json.loads((result.run_dir / "metrics.json").read_text())["metrics"]
    assert run.data.metrics["test/acc"] == pytest.approx(saved["acc"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "config.yaml", "calibration.json", "model", "report"} <= artifacts
    assert "model/best.ckpt" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "report/report.html" in {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    status = json.loads((result.run_dir / "run.json").read_text())
    assert status["mlflow_run_id"] == run.info.run_id


def test_tensorboard_event_files_hold_the_epoch_metrics(blood) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result, _ = blood
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"val/auc", "val/loss", "train/loss", "test/auc"} <= set(scalars)
    assert len(events.Scalars("val/auc")) == 2


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def not_mlflow() -> str:
    """A real HTTP server on loopback that is not MLflow (every path answers 404), as a mistyped port can be."""
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/nothing-here"
    server.shutdown()


@pytest.mark.parametrize("store", ["unreachable-server", "not-an-mlflow-server", "unwritable-database"])
def test_a_failing_tracker_warns_and_training_goes_on(
    tmp_path: Path, store: str, caplog, capfd, monkeypatch, request
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # W&B then logs offline
    if store == "unreachable-server":
        uri = f"http://127.0.0.1:{closed_port()}"
    elif store == "not-an-mlflow-server":
        uri = request.getfixturevalue("not_mlflow")
    else:
        (tmp_path / "a-file").write_text("not a folder")
        uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    config = load_config(
        REPO / "configs" / "breastmnist.yaml",
        [f"output_dir={tmp_path / 'runs'}", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
         "trainer.progress_bar=false", "evaluation.bootstrap=0", "evaluation.report=false", "tracking.mlflow=true",
         f"tracking.mlflow_tracking_uri={uri}", "tracking.tensorboard=true", "tracking.wandb=true"],
    )  # fmt: skip
    result = run_experiment(config)
    assert json.loads((result.run_dir / "run.json").read_text())["status"] == "finished"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "MLflow" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "training goes on without" in warnings[0]
    if store == "unreachable-server":
        assert "is unreachable" in warnings[0]
    if store == "not-an-mlflow-server":  # a server answered: it is there, but it is the wrong one
        assert "not as MLflow does (HTTP 404 for /health)" in warnings[0] and "unreachable" not in warnings[0]
    # W&B's own chatter stays out of the console: no anonymous-setting warning, no banner, no run summary
    printed = capfd.readouterr()
    assert "anonymous" not in printed.err + printed.out and "Run history" not in printed.err + printed.out
    assert (result.run_dir / "tensorboard").is_dir()  # the other trackers still worked
    (offline_log,) = (result.run_dir / "wandb").glob("offline-run-*/run-*.wandb")
    assert offline_log.stat().st_size > 1000


def test_guarded_logger_turns_a_dying_tracker_into_one_warning(caplog) -> None:
    from lightning.pytorch.loggers import Logger

    from medclass.training.tracking import GuardedLogger

    class DyingTracker(Logger):  # a tracker whose server went away mid-run
        name, version = "dying", "0"

        def log_metrics(self, metrics, step=None):
            raise ConnectionError("connection reset by peer")

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    guarded = GuardedLogger(DyingTracker(), "Dying")
    guarded.log_metrics({"val/auc": 0.9}, 1)
    guarded.log_metrics({"val/auc": 0.9}, 2)
    assert guarded.failed
    messages = [r.getMessage() for r in caplog.records if "Dying tracking failed" in r.getMessage()]
    assert messages == [
        "Dying tracking failed (ConnectionError: connection reset by peer); training goes on without it"
    ]


def test_evaluate_val_split_with_the_last_checkpoint(blood) -> None:
    result, _ = blood
    evaluated = evaluate_run(result.run_dir, "last", "val", settings=EvaluationConfig(bootstrap=0, report=False))
    assert evaluated.n_samples == 1712 and evaluated.intervals == {}
    saved = json.loads((result.run_dir / "metrics_val_last.json").read_text())
    assert saved["split"] == "val" and saved["checkpoint"] == "last"
    assert (result.run_dir / "calibration_last.json").is_file()
    assert not (result.run_dir / "report_val_last").exists()


@pytest.mark.slow
def test_compare_three_runs_names_the_best_and_lists_a_broken_one(blood, tmp_path: Path) -> None:
    first, out = blood
    for seed in (1, 2):
        run_experiment(blood_config(out, f"seed={seed}", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
                           "evaluation.report=false", "evaluation.bootstrap=0"))  # fmt: skip
    broken = out / "bloodmnist" / "zz-broken"
    broken.mkdir()
    shutil.copy(first.run_dir / "config.yaml", broken / "config.yaml")
    shutil.copy(first.run_dir / "run.json", broken / "run.json")
    comparison = compare_runs(out / "bloodmnist", "auc", settings={"bootstrap": 200, "report": False})
    ok = [row for row in comparison.rows if row.status == "ok"]
    assert len(ok) == 3 and comparison.rows[-1].status == "failed" and "no best checkpoint" in comparison.rows[-1].error
    best = comparison.best["bloodmnist"]
    assert best.metrics["auc"] == max(row.metrics["auc"] for row in ok) and best is ok[0]
    markdown = (out / "bloodmnist" / "comparison.md").read_text()
    assert f"**Best on bloodmnist: {best.run_dir}**" in markdown and "zz-broken" in markdown
    lines = (out / "bloodmnist" / "comparison.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("run,status,experiment,dataset,model,epoch,auc")
    with Image.open(out / "bloodmnist" / "comparison.png") as image:
        assert image.format == "PNG"


def test_unknown_metric_for_comparison(blood) -> None:
    from medclass.errors import UserError

    _, out = blood
    with pytest.raises(UserError, match=r"unknown metric 'aucc' \(did you mean auc"):
        compare_runs(out, "aucc")


def test_run_written_by_another_version(blood, tmp_path: Path) -> None:
    from medclass.errors import RunDirError

    result, _ = blood
    copy = tmp_path / "old-run"
    shutil.copytree(result.run_dir, copy, ignore=shutil.ignore_patterns("report", "tensorboard"))
    status = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**status, "format_version": 99}))
    with pytest.raises(RunDirError, match="run format version 99; this medclass reads version 1"):
        evaluate_run(copy)
    (copy / "run.json").write_text(json.dumps(status))
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["trainer"]["precision_plugin"] = "old"
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(RunDirError, match="precision_plugin.*another version"):
        evaluate_run(copy)


ARTIFACTS = REPO / "test-artifacts"


@pytest.mark.parametrize("width", [1440, 1024])
def test_report_reads_well_in_a_browser(blood, breast_run, width: int) -> None:
    """report.html in headless Chromium at a desktop and a laptop width, as a reader sees it: the question and
    the positive class in words, headline numbers with intervals, tables without raw dicts, code keys or Python
    booleans, long class names inside their column, and no path the run folder had on another machine."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the browser test needs Debian's chromium package (apt-get install chromium)"
    ARTIFACTS.mkdir(exist_ok=True)
    blood_result, _ = blood
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": width, "height": 900})
        for name, run_dir in (("breastmnist", breast_run.run_dir), ("bloodmnist", blood_result.run_dir)):
            page.goto((run_dir / "report" / "report.html").as_uri())
            assert page.inner_text("h1") == f"resnet18 on {name}"  # said once, not "x: resnet18 on x"
            facts = page.inner_text("dl.facts")
            assert "Question" in facts and "Model" in facts and "Data" in facts and "trained from scratch" in facts
            cards = page.inner_text(".cards")
            assert cards.count("95% CI") == 4, cards
            tables = "\n".join(page.locator("table").all_inner_texts())
            for raw in ("{'", "False", "True", "stopped_early", "best_epoch", "best_score", "cpu_count", "None"):
                assert raw not in tables, raw
            text = page.inner_text("body")
            assert str(run_dir.parent) not in text and run_dir.name in text, "paths relative to the run folder"
            # every table fits its column: nothing runs past the page's content box
            overflow = page.evaluate(
                "Array.from(document.querySelectorAll('table')).filter(t => t.getBoundingClientRect().right >"
                " document.body.getBoundingClientRect().right + 1).length"
            )
            assert overflow == 0
            if name == "breastmnist":
                assert "Positive class" in facts and "malignant" in facts
                plain = page.inner_text(".plain >> nth=0")
                assert "of the 42 images of malignant" in plain and "95% CI" in plain and "specificity" in plain
                assert "At the operating threshold P(malignant) >" in plain and "PPV" in plain and "NPV" in plain
                # the operating point's block, on the first screen below the sentence: counts and both thresholds
                block = page.locator("#operating-point")
                assert (
                    block.is_visible() and "true positives" in block.inner_text() and "at P > 0.5" in block.inner_text()
                )
            else:  # the 68-character class name wraps inside its cell
                cell = page.locator("td.name", has_text="immature granulocytes").first
                assert cell.bounding_box()["height"] > 30 and "granulocytes (myelocytes" in cell.inner_text()
            page.screenshot(path=str(ARTIFACTS / f"report_{name}_{width}.png"), full_page=True)
        browser.close()
