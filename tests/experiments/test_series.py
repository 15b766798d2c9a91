"""Cross-validation and repeated seeds on real BreastMNIST: folds never read the test split, the summary is the
mean of the members, fold processes plus --collect equal one call, seeds give mean and SD."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import assert_one_line_error, medclass
from conftest import REPO_ROOT

from medclass.config import load_config
from medclass.errors import ConfigError, RunDirError
from medclass.evaluation.evaluate import read_predictions
from medclass.experiments.series import collect_series, plan_cv, plan_seeds, run_series, start_series
from medclass.metrics import METRICS, summary_metrics
from medclass.run_dir import RunDir

CONFIG = REPO_ROOT / "configs" / "breastmnist.yaml"
QUICK = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.progress_bar=false", "data.batch_size=64",
         "evaluation.bootstrap=100", "evaluation.report=false", "gate.fit=false"]  # fmt: skip


@pytest.fixture(scope="module")
def breast_cv(module_tmp: Path):
    out = module_tmp
    return run_series(plan_cv(load_config(CONFIG, [f"output_dir={out}", *QUICK]), 3))


def test_cv_summary_is_the_mean_of_its_folds_and_never_reads_test(breast_cv) -> None:
    assert breast_cv.kind == "cv" and [r["name"] for r in breast_cv.rows] == ["fold1", "fold2", "fold3"]
    sources, targets, scores = [], [], []
    for row in breast_cv.rows:
        run = RunDir(row["run_dir"])
        data = run.read_data_summary()
        assert data["splits"]["test"]["n"] == row["n"] and "test split is not used" in data["source"]["split"]
        t, s, names = read_predictions(run.predictions_path("test"), data["classes"], data["task"])
        assert not any(":test_images[" in name for name in names)  # held-out fold only: train+val images
        assert row["metrics"] == run.read_metrics()["metrics"]
        sources += names
        targets.append(t)
        scores.append(s)
    assert len(sources) == len(set(sources)) == 546 + 78  # every train+val image held out exactly once
    for name in METRICS.names("headline"):
        values = [row["metrics"][name] for row in breast_cv.rows]
        assert breast_cv.aggregate[name]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
        assert breast_cv.aggregate[name]["sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    pooled = breast_cv.pooled[0]
    expected = summary_metrics(np.concatenate(targets), np.concatenate(scores), "binary")
    assert pooled["n"] == 624 and pooled["metrics"]["auc"] == pytest.approx(expected["auc"], abs=1e-9)
    low, high = pooled["intervals"]["auc"]
    assert low <= pooled["metrics"]["auc"] <= high
    summary = json.loads(breast_cv.files["summary"].read_text())
    assert summary["headline"]["metric"] == "auc" and "test split was not used" in summary["headline"]["why"]
    markdown = breast_cv.files["markdown"].read_text()
    assert "**Headline: AUC" in markdown and "Why this number" in markdown and "Pooled out-of-fold" in markdown
    assert breast_cv.files["plot"].stat().st_size > 10_000


def test_cv_ranks_likely_label_errors_from_out_of_fold_probabilities(breast_cv) -> None:
    """cleanlab on the pooled out-of-fold probabilities: every flagged image is a train+val image, the most
    doubtful first, its suggested label the fold model's; a contact sheet and a summary section show them."""
    issues = breast_cv.label_issues
    assert issues is not None and not issues.unavailable and issues.n_images == 624
    with issues.files["csv"].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["rank"] for r in rows] == [str(k) for k in range(1, len(rows) + 1)]
    confidence = [float(r["self_confidence"]) for r in rows]
    assert confidence == sorted(confidence) and all(0 <= c <= 1 for c in confidence)
    assert all(":test_images[" not in r["source"] for r in rows)
    assert all(r["given"] in ("malignant", "normal, benign") and r["suggested"] != r["given"] for r in rows[:5])
    markdown = breast_cv.files["markdown"].read_text()
    assert "## Likely label errors (out-of-fold, cleanlab)" in markdown and f"{len(rows)} of the 624" in markdown
    if rows:
        assert issues.files["sheet"].stat().st_size > 5_000 and "![the most doubtful labels]" in markdown
    summary = json.loads(breast_cv.files["summary"].read_text())
    assert summary["label_issues"]["flagged"] == len(rows)


def test_planted_label_flips_are_found_first() -> None:
    """The ranking itself on known truth: probabilities of a fair model (real BreastMNIST class balance) with 5% of
    the labels flipped: the flipped images come first."""
    from medclass.evaluation.label_issues import rank_label_issues

    rng = np.random.default_rng(0)
    truth = (rng.random(624) < 0.27).astype(int)
    p1 = np.clip(np.where(truth == 1, rng.beta(8, 2, 624), rng.beta(2, 8, 624)), 0.01, 0.99)
    given = truth.copy()
    flipped = rng.choice(624, 31, replace=False)
    given[flipped] = 1 - given[flipped]
    issues = rank_label_issues(given, np.column_stack([1 - p1, p1]), [f"img{i}" for i in range(624)],
                               ["benign", "malignant"], "binary")  # fmt: skip
    found = {int(r["source"][3:]) for r in issues.rows}
    top = {int(r["source"][3:]) for r in issues.rows[:31]}
    assert len(found & set(flipped)) >= 0.8 * 31 and len(top & set(flipped)) >= 0.7 * 31


@pytest.mark.slow
def test_fold_processes_then_collect_equal_one_cv_call(breast_cv, tmp_path: Path) -> None:
    common = ["cv", "-c", str(CONFIG), "--folds", "3", f"output_dir={tmp_path}", *QUICK]
    first = medclass(*common[:5], "--fold", "2", *common[5:])
    assert first.returncode == 0, first.stderr
    assert "summary is written when every fold has finished" in first.stdout
    rest = medclass(*common[:5], "--fold", "1", "--fold", "3", *common[5:])
    assert rest.returncode == 0, rest.stderr
    assert "headline: AUC" in rest.stdout  # the last fold collects the series
    folder = tmp_path / "breastmnist-cv3"
    collected = medclass("cv", "--collect", str(folder))
    assert collected.returncode == 0, collected.stderr
    again = json.loads((folder / "summary.json").read_text())
    for row, mine in zip(breast_cv.rows, again["members"], strict=True):
        assert mine["name"] == row["name"]
        assert mine["metrics"] == pytest.approx(row["metrics"], abs=1e-9)  # the same training, fold for fold
    assert again["aggregate"]["auc"]["mean"] == pytest.approx(breast_cv.aggregate["auc"]["mean"], abs=1e-9)
    # a finished fold is never trained again; another config is refused in this folder
    same = load_config(CONFIG, [f"output_dir={tmp_path}", *QUICK])
    runs_before = RunDir.find(folder)
    assert run_series(plan_cv(same, 3), folds={2}) is not None and RunDir.find(folder) == runs_before
    changed = load_config(CONFIG, [f"output_dir={tmp_path}", *QUICK, "optimizer.lr=0.5"])
    with pytest.raises(ConfigError, match="holds another series .*config differs"):
        run_series(plan_cv(changed, 3))


def test_collect_names_the_folds_that_have_not_finished(tmp_path: Path) -> None:
    plan = plan_cv(load_config(CONFIG, [f"output_dir={tmp_path}"]), 4)
    start_series(plan)
    with pytest.raises(RunDirError, match=r"4 of 4 member\(s\) have not finished: fold1 \(fold 1, seed 42\)"):
        collect_series(plan.folder.path)
    result = medclass("cv", "--collect", str(plan.folder.path))
    assert_one_line_error(result, "have not finished", "--fold K")
    with pytest.raises(ConfigError, match="data.fold is set"):
        plan_cv(plan.member_config(plan.members[0]), 4)
    assert_one_line_error(medclass("cv", "-c", str(CONFIG), "--folds", "1"), "k: Input should be greater")


@pytest.mark.slow
def test_seeds_give_mean_and_sd_over_test_runs(tmp_path: Path) -> None:
    result = medclass("train", "-c", str(CONFIG), "--seeds", "1,2", f"output_dir={tmp_path}", *QUICK)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "breastmnist-seeds" / "summary.json").read_text())
    aucs = [RunDir(m["run_dir"]).read_metrics()["metrics"]["auc"] for m in summary["members"]]
    assert [m["seed"] for m in summary["members"]] == [1, 2] and len(set(aucs)) == 2  # two different runs
    assert summary["split"] == "test" and summary["headline"]["mean"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert summary["headline"]["sd"] == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)
    assert "depends on its seed" in summary["headline"]["why"] and "headline: AUC" in result.stdout
    with pytest.raises(ConfigError, match="at least two seeds"):
        plan_seeds(load_config(CONFIG), [1])
    assert_one_line_error(medclass("train", "-c", str(CONFIG), "--seeds", "1,a"), "whole numbers")


def test_cv_with_seeds_pools_each_seed(tmp_path: Path) -> None:
    plan = plan_cv(load_config(CONFIG, [f"output_dir={tmp_path}", *QUICK]), 2, seeds=[3, 4])
    assert [m.name for m in plan.members] == ["fold1-seed3", "fold2-seed3", "fold1-seed4", "fold2-seed4"]
    result = run_series(plan)
    assert [p["seed"] for p in result.pooled] == [3, 4] and all(p["n"] == 624 for p in result.pooled)
    assert result.aggregate["auc"]["n"] == 4 and "2 folds x 2 seeds" in result.headline["why"]
    with pytest.raises(ConfigError, match="lists a seed twice"):
        plan_seeds(plan.config, [1, 1])


def test_the_ensemble_averages_its_members_and_survives_onnx(breast_cv, tmp_path: Path) -> None:
    from medclass.data import load_dataset
    from medclass.inference.explain import why_no_heatmaps
    from medclass.inference.features import feature_model
    from medclass.inference.onnx_export import OnnxPredictor, export_onnx
    from medclass.inference.package import load_package
    from medclass.inference.predictor import TorchPredictor, probabilities

    ensemble = load_package(breast_cv.ensemble["package"])
    members = [load_package(RunDir(row["run_dir"]).package_dir()) for row in breast_cv.rows]
    assert [m["source"]["run_dir"] for m in ensemble.manifest["ensemble"]["members"]] == [
        str(Path(row["run_dir"]).resolve()) for row in breast_cv.rows
    ]
    test = load_dataset(load_config(CONFIG).data).splits["test"]
    images = test.array().transpose(0, 3, 1, 2).copy()
    own = probabilities(TorchPredictor(ensemble, "ensemble"), images, tta=False, calibrated=False)
    each = [probabilities(TorchPredictor(m, "member"), images, tta=False, calibrated=False) for m in members]
    assert np.abs(own - np.mean(each, axis=0)).max() < 1e-6  # the mean of the members' probabilities
    assert np.ptp(np.stack(each), axis=0).max() > 1e-3  # members that differ, so the mean is a real test
    metrics = summary_metrics(test.labels, own.astype(np.float64), "binary")
    assert breast_cv.ensemble["ensemble"]["metrics"]["auc"] == pytest.approx(metrics["auc"], abs=1e-6)
    assert ensemble.manifest["source"]["test_metrics"]["auc"] == pytest.approx(metrics["auc"], abs=1e-6)
    for name, row in zip(breast_cv.ensemble["members"], breast_cv.rows, strict=True):
        assert name == row["name"]  # each member's own test metrics are beside the ensemble's
    report = export_onnx(ensemble, tmp_path / "ensemble.onnx", check_images=images[:16])
    onnx = probabilities(OnnxPredictor.open(report.path), images, tta=False, calibrated=False)
    assert np.abs(onnx - own).max() < 1e-5
    features = feature_model(str(ensemble.path), load_config(CONFIG).data)
    embedded = features.embed(torch.from_numpy(images[:4]))
    assert embedded.shape == (4, sum(m.net.num_features for m in members))
    assert "ensemble averages several" in why_no_heatmaps(TorchPredictor(ensemble, "ensemble"))


def test_evaluate_takes_the_ensemble_package_with_the_data_it_is_scored_on(breast_cv, tmp_path: Path) -> None:
    package = breast_cv.ensemble["package"]
    result = medclass("evaluate", package, "-c", str(CONFIG), "--bootstrap", "0")
    assert result.returncode == 0, result.stderr
    assert "test split, ensemble package" in result.stdout
    written = json.loads((Path(package).parent / "evaluation_breastmnist_test" / "metrics.json").read_text())
    assert written["metrics"]["auc"] == pytest.approx(breast_cv.ensemble["ensemble"]["metrics"]["auc"], abs=1e-9)
    assert written["n_samples"] == 156 and written["ensemble"] is True
    other = medclass("evaluate", package, "-c", str(REPO_ROOT / "configs" / "bloodmnist.yaml"))
    assert_one_line_error(other, "can only be evaluated on data with its classes")
