"""Resources: where state lives (TOWERFLOW_HOME), the DuckDB warehouse and MLflow tracking.

One function, `build_resources(home)`, picks the resource set, so definitions, tests and the
CLI agree on paths. MLflow is our own small ConfigurableResource over `MlflowClient` rather
than dagster-mlflow: that integration is a beta, legacy-style resource that prints deprecation
warnings and keeps a global active run; ours keeps no global state and tags one MLflow run per
Dagster run with its run id.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

# No phoning home from a tool that runs on private data (shared/STACK.md).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

DEFAULT_HOME = ".towerflow"
EXPERIMENT = "towerflow"


def towerflow_home() -> Path:
    """TOWERFLOW_HOME, default ./.towerflow, made absolute."""
    return Path(os.environ.get("TOWERFLOW_HOME") or DEFAULT_HOME).resolve()


class TowerflowPaths(dg.ConfigurableResource):
    """The state directory layout of shared/DESIGN.md."""

    home: str

    @property
    def root(self) -> Path:
        return Path(self.home)

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"


class MlflowTracker(dg.ConfigurableResource):
    """Logs each asset's figures to one MLflow run per Dagster run, namespaced by asset."""

    tracking_uri: str
    experiment: str = EXPERIMENT
    artifact_location: str | None = None

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def _experiment_id(self, client) -> str:
        exp = client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        return client.create_experiment(self.experiment, artifact_location=self.artifact_location)

    def run_id_for(self, dagster_run_id: str, job_name: str = "") -> str:
        """The MLflow run tagged with this Dagster run id, created on first use."""
        client = self._client()
        eid = self._experiment_id(client)
        found = client.search_runs([eid], filter_string=f"tags.dagster_run_id = '{dagster_run_id}'",
                                   max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(eid, run_name=f"{job_name or 'dagster'}-{dagster_run_id[:8]}",
                                tags={"dagster_run_id": dagster_run_id, "dagster_job": job_name})
        client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id

    def log(self, context, asset: str, metrics: dict[str, float] | None = None,
            params: dict | None = None, artifacts: list[Path] | None = None, step: int = 0) -> str:
        """Log `asset.name` metrics (and params/artifacts) to this Dagster run's MLflow run."""
        from mlflow.entities import Metric, Param

        client = self._client()
        op_context = getattr(context, "op_execution_context", context)  # asset and check contexts alike
        run_id = self.run_id_for(op_context.run_id, op_context.job_name or "")
        now = int(time.time() * 1000)
        ms = [Metric(_metric_key(f"{asset}.{k}"), float(v), now, step) for k, v in (metrics or {}).items() if v is not None]
        ps = [Param(f"{asset}.{k}", str(v)[:6000]) for k, v in (params or {}).items()]
        existing = client.get_run(run_id).data.params
        ps = [p for p in ps if p.key not in existing]  # params are write-once per run
        if ms or ps:
            client.log_batch(run_id, metrics=ms, params=ps)
        for path in artifacts or []:
            client.log_artifact(run_id, str(path), artifact_path=asset)
        return run_id


def _metric_key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and space; anything else becomes _."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


def duckdb_resource(home: Path) -> DuckDBResource:
    # memory_limit keeps the cleaning path inside a laptop-sized budget; DuckDB spills beyond it.
    memory = os.environ.get("TOWERFLOW_DUCKDB_MEMORY", "1536MB")
    from orchestration.instance import WarehouseResource  # a DuckDBResource that also enforces the pool

    return WarehouseResource(database=str(home / "warehouse.duckdb"), connection_config={"memory_limit": memory})


def build_resources(home: Path | None = None) -> dict:
    home = Path(home) if home else towerflow_home()
    home.mkdir(parents=True, exist_ok=True)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{home / 'mlflow.db'}"
    return {
        "paths": TowerflowPaths(home=str(home)),
        "duckdb": duckdb_resource(home),
        "mlflow": MlflowTracker(tracking_uri=uri, artifact_location=(home / "mlartifacts").as_uri()),
        # Runs torchrun for two_tower_model with workers > 1; dagster_k8s.PipesK8sClient runs the
        # same command in a pod (see the asset's docstring).
        "pipes_subprocess_client": dg.PipesSubprocessClient(),
    }
