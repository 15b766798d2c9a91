"""medclass tune on real BreastMNIST: a killed search resumes without repeating finished trials, two workers share
one study, the best recipe retrains to the same validation score, and the search space is checked up front."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import optuna
import pytest
import yaml
from cli_runner import assert_one_line_error, medclass

from medclass.config import load_config
from medclass.errors import ConfigError, UserError
from medclass.evaluation.compare import paired_difference
from medclass.experiments.tune import open_study, parse_budget, plan_tune, search
from medclass.run_dir import RunDir

pytestmark = pytest.mark.slow


def tune_config(tmp_path: Path, epochs: int = 2, **space) -> Path:
    config = {
        "experiment": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "data": {"flag": "breastmnist", "batch_size": 64},
        "trainer": {"max_epochs": epochs, "limit_train_batches": 2, "progress_bar": False},
        "evaluation": {"bootstrap": 0, "report": False},
        "tune": {"space": space or {"optimizer.lr": {"low": 1e-4, "high": 1e-2, "log": True},
                                    "loss.label_smoothing": [0.0, 0.1]},
                 "startup_trials": 10},
    }  # fmt: skip
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def study_of(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'runs' / 'tiny-tune' / 'study.db'}")


def complete_in_file(tmp_path: Path) -> int:
    """Finished trials, read without Optuna: opening the study with Optuna would create its tables, racing the
    search process that is creating them (a race that once left the search dead and this test waiting)."""
    database = tmp_path / "runs" / "tiny-tune" / "study.db"
    if not database.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)) as connection:
            return connection.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:  # no tables yet, or locked for a moment
        return 0


def complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))


def test_a_killed_search_resumes_without_repeating_trials_and_the_best_recipe_retrains(tmp_path: Path) -> None:
    config = tune_config(tmp_path)
    recipe = yaml.safe_load(config.read_text())  # epochs chosen by the loss, trials ranked by AUC
    recipe["checkpoint"], recipe["tune"]["metric"] = {"monitor": "loss"}, "auc"
    config.write_text(yaml.safe_dump(recipe))
    command = [str(Path(sys.executable).with_name("medclass")), "tune", "-c", str(config), "--trials", "3"]
    log = tmp_path / "first.log"
    with log.open("wb") as out:
        process = subprocess.Popen([*command, "--no-retrain"], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None and complete_in_file(tmp_path) == 0:
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert complete_in_file(tmp_path) > 0, f"no trial finished before the kill:\n{log.read_text()[-3000:]}"
    before = {t.number: t.user_attrs["run_dir"] for t in complete(study_of(tmp_path))}
    assert 1 <= len(before) < 3
    resumed = medclass("tune", "-c", str(config), "--trials", "3")
    assert resumed.returncode == 0, resumed.stderr
    study = study_of(tmp_path)
    after = {t.number: t.user_attrs["run_dir"] for t in complete(study)}
    assert len(after) == 3 and all(after[n] == before[n] for n in before)  # finished trials kept, not rerun
    trial_dirs = [p for p in (tmp_path / "runs" / "tiny-tune" / "trials").iterdir()]
    assert len(trial_dirs) <= 4  # three trials and at most the one the kill cut short
    for run_dir in after.values():
        assert RunDir(run_dir).read_status()["status"] == "trial"
        assert not RunDir(run_dir).has_metrics("test")  # the search never evaluates on the test split
    best = study.best_trial
    recipe = load_config(tmp_path / "runs" / "tiny-tune" / "best.yaml")
    assert recipe.optimizer.lr == pytest.approx(best.params["optimizer.lr"]) and recipe.tune is None
    assert recipe.checkpoint.monitor == "auc", "the best epoch is chosen as in the trials, by the tuned metric"
    retrained = RunDir.find(tmp_path / "runs" / "tiny-best")
    assert len(retrained) == 1 and RunDir(retrained[0]).has_metrics("test")
    assert RunDir(retrained[0]).read_status()["best_score"] == pytest.approx(best.value, abs=1e-6)  # as written
    summary = (tmp_path / "runs" / "tiny-tune" / "summary.md").read_text()
    assert "test split was not evaluated during the search" in summary and "Retrained once" in summary
    # How far the best recipe is ahead of the runner-up, on the same 78 validation images, paired: said in the
    # summary and on the console, with the difference the trial table shows.
    runner_up = max((t for t in complete(study) if t.number != best.number), key=lambda t: t.value)
    said = f"vs runner-up (trial {runner_up.number}) on the same 78 validation images: AUC (MedMNIST) "
    assert said in summary and said in resumed.stdout, resumed.stdout
    lead = paired_difference(best.user_attrs["run_dir"], runner_up.user_attrs["run_dir"], "auc", seed=recipe.seed)
    assert lead is not None and lead.low <= lead.difference <= lead.high
    assert lead.difference == pytest.approx(best.value - runner_up.value, abs=2e-3)
    assert f"{lead.difference:+.4f} (95% paired bootstrap interval {lead.low:+.4f} to {lead.high:+.4f})" in summary
    assert ("cannot tell these recipes apart" in summary) == (lead.low <= 0 <= lead.high)
    same = paired_difference(best.user_attrs["run_dir"], best.user_attrs["run_dir"], "auc")
    assert same is not None and (same.difference, same.low, same.high) == (0, 0, 0) and not same.separated
    assert paired_difference(best.user_attrs["run_dir"], runner_up.user_attrs["run_dir"], "loss") is None
    assert (tmp_path / "runs" / "tiny-tune" / "history.png").stat().st_size > 10_000


def test_two_workers_share_one_study(tmp_path: Path) -> None:
    config = tune_config(tmp_path, epochs=1)
    result = medclass("tune", "-c", str(config), "--trials", "4", "--workers", "2", "--no-retrain")
    assert result.returncode == 0, result.stderr
    assert "2 worker processes with 1 thread(s) each" in result.stdout
    trials = complete(study_of(tmp_path))
    assert 4 <= len(trials) <= 5  # a worker may start one more while the other finishes the fourth
    assert len({t.user_attrs["process"] for t in trials}) == 2  # both workers ran trials of the one study
    assert len({t.user_attrs["run_dir"] for t in trials}) == len(trials)


@pytest.mark.unit
def test_a_search_whose_trials_all_fail_stops_with_the_cause(tmp_path: Path) -> None:
    config = load_config(tune_config(tmp_path), [f"data.root={tmp_path / 'empty'}", "data.download=false"])
    with pytest.raises(UserError, match=r"3 trials in a row failed, the last with: .*breastmnist\.npz not found"):
        search(plan_tune(config), trials=50, budget_s=None)
    assert [t.state for t in study_of(tmp_path).get_trials()] == [optuna.trial.TrialState.FAIL] * 3
    result = medclass("tune", "-c", str(tune_config(tmp_path)), "--trials", "50", f"data.root={tmp_path / 'empty'}",
                      "data.download=false")  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr  # one line per failed trial
    assert len(study_of(tmp_path).get_trials()) == 6


@pytest.mark.unit
def test_the_search_space_and_budget_are_checked_before_training(tmp_path: Path) -> None:
    assert parse_budget("45m") == 2700 and parse_budget("1h30m") == 5400 and parse_budget("90s") == 90
    assert parse_budget("2") == 120
    with pytest.raises(UserError, match="45m, 2h"):
        parse_budget("soon")
    with pytest.raises(ConfigError, match="no tune: section"):
        plan_tune(load_config(None, ["data.flag=breastmnist"], experiment="t"))
    config = tune_config(tmp_path, **{"optimizer.lr": {"low": 0.1, "high": 0.01}})
    with pytest.raises(ConfigError, match=r"low \(0.1\) must be below high"):
        load_config(config)
    config = tune_config(tmp_path, **{"optimizer.nonsense": [1, 2]})
    with pytest.raises(ConfigError, match="nonsense"):
        plan_tune(load_config(config))
    with pytest.raises(ConfigError, match="validation loss cannot compare trials that change loss.label_smoothing"):
        plan_tune(load_config(tune_config(tmp_path), ["checkpoint.monitor=loss"]))
    plan_tune(load_config(tune_config(tmp_path), ["checkpoint.monitor=loss", "tune.metric=auc"]))
    assert_one_line_error(medclass("tune", "-c", str(tune_config(tmp_path)), "--budget", "soon"), "--budget 'soon'")
    open_study(plan_tune(load_config(tune_config(tmp_path))))  # a study with this space...
    wider = tune_config(tmp_path, **{"optimizer.lr": {"low": 1e-5, "high": 1e-1, "log": True}})
    with pytest.raises(ConfigError, match="another config or search space"):
        open_study(plan_tune(load_config(wider)))  # ...refuses another one
    open_study(plan_tune(load_config(tune_config(tmp_path)).model_copy(update={"seed": 42})))  # same: accepted


def test_a_pruned_trial_stops_after_the_epoch_and_its_run_says_so(tmp_path: Path) -> None:
    from medclass.experiments.tune import PruneOnValidation
    from medclass.training import train

    config = load_config(tune_config(tmp_path), ["trainer.max_epochs=4"])
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial = study.ask()  # an AUC is never above 2: the pruner stops the trial at its first report
    pruning = PruneOnValidation(trial, "val/auc")
    result = train(config.model_copy(update={"tune": None}), callbacks=[pruning])
    status = RunDir(result.run_dir).read_status()
    assert pruning.pruned_at == 1 and status["epochs"] == 1 and status["status"] == "trained"
    assert list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [0]
