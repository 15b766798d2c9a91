"""The MLflow model registry: register a run's model package as a new version of a named model, and fetch a
registered version (``models:/<name>/<version>`` or ``models:/<name>@<alias>``) to predict or serve with it.

What is registered is the model package (JSON + safetensors), logged as artifacts of the run's MLflow run; it is
loaded back with medclass's safe loader, never through MLflow's pickled Python models."""

from __future__ import annotations

import os
from pathlib import Path

from medclass.config.reporting import artifact_location
from medclass.errors import UserError
from medclass.inference.package import package_from_run
from medclass.run_dir import RunDir

PACKAGE_ARTIFACT = "medclass-model"
DEFAULT_STORE = Path("runs") / "mlflow.db"


def resolve_tracking_uri(explicit: str | None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else runs/mlflow.db in the current folder (as an absolute
    path, so messages say where it is). The same for register, predict and serve, so that what one command
    registers the next one finds."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{DEFAULT_STORE.resolve()}"


def _store_run(client, status: dict, uri: str) -> str | None:
    """The MLflow run of this run directory in this store: the one made for it by an earlier registration here,
    or the one training logged to when that was this store. None when the store has none (a second store)."""
    from mlflow.exceptions import MlflowException

    for run_id in ((status.get("mlflow_runs") or {}).get(uri), status.get("mlflow_run_id")):
        if not run_id:
            continue
        try:
            client.get_run(run_id)
            return run_id
        except MlflowException:  # a run of another store
            continue
    return None


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def register_run(run_dir: str | Path, name: str, tracking_uri: str | None = None) -> tuple[str, str, str]:
    """(name, version, tracking URI). The run's MLflow run (from training with tracking.mlflow) receives the
    package; a run trained without MLflow gets a new MLflow run in an experiment named after it."""
    from mlflow.exceptions import MlflowException

    run = RunDir.open(run_dir)
    config = run.load_config()
    uri = resolve_tracking_uri(tracking_uri)
    package = package_from_run(run.path)
    try:
        client = _client(uri)
        status = run.read_status()
        run_id = _store_run(client, status, uri)
        if run_id is None:
            experiment_name = config.tracking.mlflow_experiment or config.experiment
            experiment = client.get_experiment_by_name(experiment_name)
            experiment_id = (
                experiment.experiment_id
                if experiment
                else client.create_experiment(experiment_name, artifact_location=artifact_location(uri))
            )
            mlflow_run = client.create_run(experiment_id, run_name=f"{config.experiment}/{run.path.name}",
                                           tags={"run_dir": str(run.path.resolve())})  # fmt: skip
            run_id = mlflow_run.info.run_id
            client.set_terminated(run_id)
            run.update_status(mlflow_runs={**(status.get("mlflow_runs") or {}), uri: run_id})
        client.log_artifacts(run_id, str(package), PACKAGE_ARTIFACT)
        try:
            client.create_registered_model(name)
        except MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
        source = f"{client.get_run(run_id).info.artifact_uri}/{PACKAGE_ARTIFACT}"
        version = client.create_model_version(name, source, run_id=run_id)
    except MlflowException as exc:
        raise UserError(f"MLflow at {uri}: {str(exc).splitlines()[0][:300]}") from None
    return name, str(version.version), uri


def fetch_registered(model_uri: str, destination: Path, tracking_uri: str | None = None) -> Path:
    """Download a registered version's package into ``destination`` (the caller's to remove) and return it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    try:
        mlflow.set_registry_uri(uri)
        mlflow.set_tracking_uri(uri)
        path = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination))
    except MlflowException as exc:
        raise UserError(
            f"cannot fetch {model_uri} from MLflow at {uri} ({str(exc).splitlines()[0][:200]}); register it with "
            "`medclass register RUN_DIR --name NAME`, or pass --tracking-uri"
        ) from None
    return Path(path)
