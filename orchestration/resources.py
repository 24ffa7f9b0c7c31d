"""Resources: where state lives (TOWERFLOW_HOME), the DuckDB warehouse and MLflow tracking.

One function, `build_resources(home)`, picks the resource set, so definitions, tests and the
CLI agree on paths. MLflow is our own small ConfigurableResource over `MlflowClient` rather
than dagster-mlflow: that integration is a beta, legacy-style resource that prints deprecation
warnings and keeps a global active run; ours keeps no global state, tags one MLflow run per
Dagster run with its run id and nests one child run per training under it.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from models.artifacts import ARTIFACTS

# No phoning home from a tool that runs on private data (shared/STACK.md).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

DEFAULT_HOME = ".towerflow"
EXPERIMENT = "towerflow"
REGISTERED_MODEL = "towerflow-two-tower"
RANKER_MODEL = "towerflow-ranker"
GENERATIVE_MODEL = "towerflow-generative"
CHAMPION = "champion"  # the registry alias everything that serves follows, in every family
CHALLENGER = "challenger"  # the two-tower version under online A/B test against the champion
MLFLOW_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
REGISTERED_MODEL_DESCRIPTION = (
    "towerflow's two-tower retriever as a pyfunc: user ids (and optional recent item ids) in, top-k items "
    "out. promoted_model registers one version per checkpoint that passed the blocking evaluation check and "
    "moves the alias 'champion' to it."
)
DESCRIPTIONS = {
    REGISTERED_MODEL: REGISTERED_MODEL_DESCRIPTION,
    RANKER_MODEL: "towerflow's candidate-isolation ranker: its checkpoint folder (config.json with the actions "
    "and weights, ranker.pt, evaluation.json), loaded by models.ranking.ranker. promoted_ranker registers one "
    "version per checkpoint that passed ranking_beats_retrieval_on_valid_ndcg and moves the alias 'champion' to it.",
    GENERATIVE_MODEL: "towerflow's generative retriever: its checkpoint folder (config.json, model.pt, the "
    "semantic-ID codes it was trained with, and in ETEGRec mode the tokenizer it trained), loaded by "
    "models.generative. promoted_generative registers one version per checkpoint that passed "
    "generative_beats_chance_on_valid_hr and moves the alias 'champion' to it.",
}


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
        return self.root / ARTIFACTS


class MlflowTracker(dg.ConfigurableResource):
    """MLflow as its users look for it: one parent run per Dagster run, RUNNING while the run
    works and ended FINISHED or FAILED (with its true duration) when the run's resources are torn
    down; every asset logs its figures to it namespaced by asset (`log`); each training is a
    child run (`child_run`) with its params, per-check metrics, curves, system metrics, dataset
    inputs and its logged model, so trainings compare side by side.

    Opening and closing the parent run rides on the resource's own lifecycle
    (setup_for_execution / teardown_after_execution: once per run with the in-process
    executor), so it holds for `dagster asset materialize`, `materialize()` and the daemon alike,
    with no sensor to keep running. A run is FAILED when any of its steps failed (a blocking
    check that failed included); a run killed with -9 stays RUNNING until the dead-run sweep.
    The experiment is tagged as a model-training one (`mlflow.experimentKind`), so the MLflow UI
    opens it on runs and models, not GenAI traces.
    """

    tracking_uri: str
    experiment: str = EXPERIMENT
    artifact_location: str | None = None
    system_metrics_seconds: float = 5.0  # sampling interval of system metrics during a training
    registered_model: str = REGISTERED_MODEL

    _parent: str | None = PrivateAttr(default=None)

    def _client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)

    def _experiment_id(self, client) -> str:
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            eid = client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        else:
            eid = exp.experiment_id
        if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            client.set_experiment_tag(eid, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return eid

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        run = context.run
        if run is not None:
            self._parent = self.run_id_for(run.run_id, run.job_name or "", _run_label(run))

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._parent is None or context.instance is None or context.run is None:
            return
        failures = context.instance.get_records_for_run(
            context.run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE, limit=1
        ).records
        self._client().set_terminated(self._parent, "FAILED" if failures else "FINISHED")

    def end_dagster_run(self, dagster_run_id: str, status: str = "KILLED") -> list[str]:
        """End the still-RUNNING MLflow runs (parent and children) of a Dagster run whose process
        is gone (the dead-run sweep calls this); returns their ids."""
        client = self._client()
        exp = client.get_experiment_by_name(self.experiment)
        if exp is None:
            return []
        runs = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.dagster_run_id = '{dagster_run_id}' and attributes.status = 'RUNNING'",
        )
        for r in runs:
            client.set_terminated(r.info.run_id, status)
        return [r.info.run_id for r in runs]

    def run_id_for(self, dagster_run_id: str, job_name: str = "", label: str | None = None) -> str:
        """The MLflow run tagged with this Dagster run id, created (RUNNING) on first use."""
        from mlflow.utils.mlflow_tags import MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE

        client = self._client()
        eid = self._experiment_id(client)
        found = client.search_runs([eid], filter_string=f"tags.dagster_run_id = '{dagster_run_id}'", max_results=1)
        if found:
            return found[0].info.run_id
        label = label or f"{job_name or 'dagster'} {dagster_run_id[:8]}"
        run = client.create_run(
            eid,
            run_name=f"{label} · {_utc_minute()}",
            tags={
                "dagster_run_id": dagster_run_id,
                "dagster_job": job_name,
                MLFLOW_SOURCE_TYPE: "JOB",
                MLFLOW_SOURCE_NAME: f"dagster {job_name}".strip(),
            },
        )
        return run.info.run_id

    def _parent_for(self, context) -> tuple[str, str]:
        op_context = getattr(context, "op_execution_context", context)  # asset and check contexts alike
        return self._parent or self.run_id_for(op_context.run_id, op_context.job_name or ""), op_context.run_id

    def log(
        self,
        context,
        asset: str,
        metrics: dict[str, float] | None = None,
        params: dict | None = None,
        artifacts: list[Path] | None = None,
        step: int = 0,
    ) -> str:
        """Log `asset/name` metrics (and params/artifacts) to this Dagster run's MLflow run. The
        asset's name and a slash lead every key, so the run's few hundred figures fall into one
        section per asset in MLflow's charts and sort by asset in its tables."""
        run_id, _ = self._parent_for(context)
        TrackedRun(self._client(), run_id, self.tracking_uri).log(
            {f"{asset}/{k}": v for k, v in (metrics or {}).items()},
            step=step,
            params={f"{asset}/{k}": v for k, v in (params or {}).items()},
            artifacts=artifacts,
            artifact_path=asset,
        )
        return run_id

    @contextmanager
    def child_run(
        self, context, name: str, *, tags: dict | None = None, system_metrics: bool = True
    ) -> Iterator["TrackedRun"]:
        """A nested run under this Dagster run's MLflow run (e.g. one training): FINISHED when the
        block ends, FAILED when it raises; system metrics (CPU, memory, disk, network via psutil)
        sampled every `system_metrics_seconds` while it is open."""
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        client = self._client()
        parent, dagster_run_id = self._parent_for(context)
        run = client.create_run(
            client.get_run(parent).info.experiment_id,
            run_name=f"{name} · {_utc_minute()}",
            tags={
                MLFLOW_PARENT_RUN_ID: parent,
                "dagster_run_id": dagster_run_id,
                **{k: str(v) for k, v in (tags or {}).items()},
            },
        )
        monitor = None
        if system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(
                run.info.run_id, sampling_interval=self.system_metrics_seconds, tracking_uri=self.tracking_uri
            )
            monitor.start()
        status = "FAILED"
        try:
            yield TrackedRun(client, run.info.run_id, self.tracking_uri)
            status = "FINISHED"
        finally:
            if monitor is not None:
                monitor.finish()
                # one last sample: the monitor's loop drops what it has not published when it stops,
                # so a training shorter than the interval would otherwise show no system metrics
                monitor.collect_metrics()
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()
            client.set_terminated(run.info.run_id, status)

    def promote(
        self,
        checkpoint: str,
        tags: dict,
        *,
        model_uri: str | None = None,
        folder: Path | None = None,
        context=None,
        registered_model: str | None = None,
        alias: str = CHAMPION,
        description: str | None = None,
    ) -> tuple[int, bool]:
        """The one registration path of every model family: register a checkpoint as a version of
        `registered_model` (default: the two-tower's) and move `alias` to it. One version per
        checkpoint: promoting the same checkpoint again reuses its version. The version's source
        is a logged MLflow model (`model_uri`: the two-tower's pyfunc) or, for a family without
        one, the checkpoint `folder`, uploaded as artifacts of this Dagster run's MLflow run
        (`context`) under `<registered_model>/<checkpoint>`; `models:/<name>@champion` then
        downloads that folder. `description` is the version's own (what data, which check it
        passed). Returns (version, created)."""
        from mlflow.exceptions import MlflowException

        if (model_uri is None) == (folder is None):
            raise ValueError("promote needs exactly one of model_uri (a logged model) or folder (a checkpoint)")
        name = registered_model or self.registered_model
        client = self._client()
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name, description=DESCRIPTIONS.get(name))
        existing = [
            v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get("checkpoint") == checkpoint
        ]
        tags = {"checkpoint": checkpoint, **{k: str(v) for k, v in tags.items()}}
        if existing:
            version, created = existing[0], False
        elif model_uri is not None:
            import mlflow

            from models.retrieval.pyfunc import using_tracking_uri

            with using_tracking_uri(self.tracking_uri):
                version = mlflow.register_model(model_uri, name, tags=tags)
            created = True
        else:
            run_id, _ = self._parent_for(context)
            path = f"{name}/{checkpoint}"
            client.log_artifacts(run_id, str(folder), artifact_path=path)
            version = client.create_model_version(name, source=f"runs:/{run_id}/{path}", run_id=run_id, tags=tags)
            created = True
        if description and version.description != description:
            client.update_model_version(name, version.version, description=description)
        client.set_registered_model_alias(name, alias, version.version)
        return int(version.version), created

    def version_of(self, checkpoint: str, registered_model: str | None = None):
        """The registered version of a checkpoint (its `checkpoint` tag), or None."""
        name = registered_model or self.registered_model
        found = [
            v
            for v in self._client().search_model_versions(f"name = '{name}'")
            if v.tags.get("checkpoint") == checkpoint
        ]
        return found[0] if found else None

    def move_alias(self, alias: str, version: int, registered_model: str | None = None) -> None:
        """Point `alias` at an already registered `version` (`drop_alias` removes one)."""
        self._client().set_registered_model_alias(registered_model or self.registered_model, alias, str(version))

    def tag_version(self, version: int, tags: dict, registered_model: str | None = None) -> None:
        client = self._client()
        for k, v in tags.items():
            client.set_model_version_tag(registered_model or self.registered_model, str(version), k, str(v))

    def runs_url(self, ui: str = MLFLOW_UI) -> str | None:
        """The experiment's runs view in `mlflow ui` (None before the first run). The plain
        experiment link opens a fresh browser on MLflow's GenAI overview, whatever the
        experiment's kind; this one opens on the runs table."""
        exp = self._client().get_experiment_by_name(self.experiment)
        return f"{ui}/#/experiments/{exp.experiment_id}/runs" if exp else None

    def drop_alias(self, alias: str, registered_model: str | None = None) -> bool:
        """Remove `alias` (default model: the two-tower's); False when it pointed nowhere."""
        from mlflow.exceptions import MlflowException

        try:
            self._client().delete_registered_model_alias(registered_model or self.registered_model, alias)
        except MlflowException:
            return False
        return True

    def champion(self, alias: str = CHAMPION, registered_model: str | None = None):
        """The model version the alias points at (default: the two-tower's), or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self._client().get_model_version_by_alias(registered_model or self.registered_model, alias)
        except MlflowException:
            return None


class TrackedRun:
    """One MLflow run, written to through the client (no global active run)."""

    def __init__(self, client, run_id: str, tracking_uri: str):
        self.client, self.run_id, self.tracking_uri = client, run_id, tracking_uri

    def log(
        self,
        metrics: dict[str, float] | None = None,
        step: int = 0,
        params: dict | None = None,
        artifacts: list[Path] | None = None,
        artifact_path: str | None = None,
        model_id: str | None = None,
        dataset=None,
    ) -> None:
        """`model_id` (a logged model of this run) and `dataset` (an mlflow Dataset the figures
        were measured on) attach the metrics to that model, which then lists the dataset."""
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        on = {"model_id": model_id}
        if dataset is not None:
            on.update(dataset_name=dataset.name, dataset_digest=dataset.digest)
        ms = [Metric(_metric_key(k), float(v), now, step, **on) for k, v in (metrics or {}).items() if v is not None]
        ps = [Param(_metric_key(k), str(v)[:6000]) for k, v in (params or {}).items()]
        if ps:
            existing = self.client.get_run(self.run_id).data.params
            ps = [p for p in ps if p.key not in existing]  # params are write-once per run
        if ms or ps:
            self.client.log_batch(self.run_id, metrics=ms, params=ps)
        for path in artifacts or []:
            self.client.log_artifact(self.run_id, str(path), artifact_path=artifact_path)

    def log_inputs(self, datasets: list[tuple[object, str]]) -> None:
        """(mlflow Dataset, context such as "train") pairs as the run's dataset inputs."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        self.client.log_inputs(
            self.run_id,
            datasets=[
                DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, ctx)])
                for ds, ctx in datasets
            ],
        )


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # "Machine learning" in the MLflow UI (not GenAI)


def _utc_minute() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%MZ")


def _run_label(run) -> str:
    """What a Dagster run did, for the MLflow run name: its job, or for an ad-hoc
    materialization the assets it selected."""
    job = run.job_name or "dagster"
    keys = sorted(k.to_user_string() for k in (run.asset_selection or ()))
    what = "materialize" if job.startswith("__") else job  # __ASSET_JOB, __ephemeral_asset_job__
    if keys and what == "materialize":
        what += " " + (", ".join(keys) if len(keys) <= 3 else f"{len(keys)} assets")
    return what


def _metric_key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and space; anything else becomes _."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", name)


DUCKDB_MIN_MEMORY_MIB = 1536  # a laptop's share, and the floor of the rule below


def machine_memory_bytes() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit when lower (a
    container's)."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def duckdb_memory_limit() -> str:
    """DuckDB's memory_limit for the warehouse: `TOWERFLOW_DUCKDB_MEMORY` when set, else a quarter
    of the memory the process may use, at least 1.5 GB. DuckDB spills past it where an operator
    can; the GROUP BY that finds duplicate events (sql/event_versions.sql) cannot spill all of
    its state, which grows with the events: at 100M events it failed at a fixed 1.5 GB and passed
    at 4 GB (README, "At scale"). A quarter leaves the rest to the Python side of a step."""
    memory = os.environ.get("TOWERFLOW_DUCKDB_MEMORY")
    if memory:
        return memory
    return f"{max(DUCKDB_MIN_MEMORY_MIB, machine_memory_bytes() // 4 // 2**20)}MiB"


def duckdb_resource(home: Path) -> DuckDBResource:
    from orchestration.instance import WarehouseResource  # a DuckDBResource that also enforces the pool

    return WarehouseResource(
        database=str(home / "warehouse.duckdb"), connection_config={"memory_limit": duckdb_memory_limit()}
    )


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
