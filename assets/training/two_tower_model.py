"""two_tower_model: train the towers on the train split, early-stop on valid NDCG@10, checkpoint."""

import tempfile
from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets._config import fields_for, to_library
from assets.training.config import TrainingConfig
from assets.reporting import figures_metadata, md_table
from assets.training._torchrun import train_on_workers
from models.artifacts import Layout, write_json_atomic
from orchestration.versions import WAREHOUSE_POOL, code_version
from models.retrieval.checkpoint import load_checkpoint, read_manifest, save_checkpoint, update_manifest
from models.retrieval.datasets import warehouse_datasets
from models.retrieval.pyfunc import log_pyfunc, write_bundle
from models.retrieval.data import WarehouseShape, load_for_tower, tower_config_for
from models.retrieval.plots import training_curves
from models.retrieval.towers import TowerConfig
from models.retrieval.training import TrainConfig, config_dict, summary_metrics, train
from orchestration.resources import MLFLOW_UI, MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["vocabularies", "interaction_splits", "clean_items", "clean_interactions"],
    kinds={"pytorch"},
    owners=["team:recsys"],
    tags={"layer": "model"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def two_tower_model(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
    pipes_subprocess_client: dg.PipesSubprocessClient,
) -> dg.MaterializeResult:
    """The two-tower retriever's checkpoint: a user tower (the user's recent positives through the
    configured encoder) and an item tower (hashed id + content), trained on the train split with
    sampled softmax and early-stopped on valid NDCG@10; the best check's weights, config and
    vocabulary fingerprint in artifacts/models/<version>/, logged to MLflow as a pyfunc model.
    model_evaluation measures it; promoted_model serves it once it beats popularity."""
    # workers = 1 trains in this process. workers > 1 runs `torchrun --standalone
    # --nproc-per-node <workers> -m assets.training._rank` (PyTorch DDP, gloo) as an external
    # process through Dagster Pipes: the spec travels in the Pipes extras, rank 0 streams its log
    # lines and one message per validation check, writes the checkpoint and reports its result;
    # this asset then records it exactly as for one worker. To run the ranks in a Kubernetes pod
    # instead (untested here), swap the resource for dagster_k8s.PipesK8sClient and call
    # `pipes_k8s_client.run(context=context, image=<image with this repo>, command=["torchrun",
    # "--standalone", "--nproc-per-node", str(n), "-m", "models.retrieval.distributed"],
    # extras={"spec": spec}, base_pod_spec={...cpu requests, volumes...})`: the same module and
    # spec; the warehouse and the artifacts folder must be on a volume the pod mounts at the same
    # paths, and a failed pod surfaces through the client's own error (its log, not rank files).
    if config.workers % config.nodes:
        raise dg.Failure(f"workers ({config.workers}) must split evenly over nodes ({config.nodes})")
    root = Layout(paths.artifacts).models
    with duckdb.get_connection() as con:
        fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
        tower = tower_config_for(WarehouseShape.read(con), **fields_for(config, TowerConfig))
        inputs = warehouse_datasets(con, duckdb.database)
        tcfg = to_library(config, TrainConfig)
        # the valid users early stopping reads (train() would draw the same sample): only theirs
        # are built, here and in every data-parallel rank (models.retrieval.distributed.load_data)
        data = load_for_tower(con, tower, sample=tcfg.valid_sample) if config.workers == 1 else None
    # closed: with several workers every rank opens the warehouse read-only, which DuckDB
    # refuses while any process holds it open for writing
    resume_from, init_state = None, None
    if config.resume:
        latest = read_manifest(root).get("latest")
        if latest:
            resume_from = root / latest
            _, meta, init_state = load_checkpoint(resume_from, expected_fingerprint=fingerprint)
            context.log.info(f"resuming from checkpoint {latest}")

    with mlflow.child_run(
        context,
        f"two_tower_model {tower.encoder}",
        tags={"dagster_asset": "two_tower_model", "encoder": tower.encoder, "vocabulary_fingerprint": fingerprint},
    ) as run:
        run.log_inputs([(ds, ctx) for ds, ctx, _ in inputs])
        run.log(
            params={
                **{f"tower.{k}": v for k, v in tower.to_dict().items()},
                **{f"train.{k}": v for k, v in config_dict(tower, tcfg)["train"].items()},
                "workers": config.workers,
                **{f"rows.{ds.name}": n for ds, _, n in inputs},
            }
        )

        # the per-check figures are curves ("curve/" in the run's charts); the run's plain
        # figures are the checkpoint's own, logged once at its check (record_checkpoint)
        def log_check(check: int, row: dict) -> None:
            run.log({f"curve/{k}": v for k, v in row.items() if k != "check"}, step=check)

        if config.workers == 1:
            context.log.info(
                f"training {tower.encoder} towers on {len(data.train):,} train rows, "
                f"{len(data.catalog):,} items, {len(data.valid):,} of {data.users_total['valid']:,} valid users"
            )
            result = train(
                data.catalog,
                data.train,
                tower,
                tcfg,
                valid=data.valid,
                log=context.log.info,
                on_epoch=log_check,
                init_state=init_state,
            )
            final = summary_metrics(result)
            path = save_checkpoint(
                root,
                result.model,
                config_dict(tower, tcfg),
                fingerprint,
                metrics=final,
                optimizer_states=result.optimizer_states,
            )
            history, parallel = result.history, {"workers": 1}
        else:
            spec = {
                "database": duckdb.database,
                "duckdb_config": dict(duckdb.connection_config or {}),
                "tower": tower.to_dict(),
                "train": config_dict(tower, tcfg)["train"],
                "checkpoint_root": str(root),
                "fingerprint": fingerprint,
                "resume_from": str(resume_from) if resume_from else None,
            }
            out = train_on_workers(context, pipes_subprocess_client, config.workers, spec, nodes=config.nodes)
            path, final, history = Path(out["checkpoint"]), out["metrics"], out["history"]
            for row in history:  # the same per-check MLflow figures as one worker logs live
                log_check(row["check"], row)
            parallel = {
                k: out[k]
                for k in ("workers", "nodes", "backend", "threads_per_rank", "ranks_identical", "startup_seconds")
            }
            if not out["ranks_identical"]:
                context.log.warning(f"the ranks' weights differed after training: {out['differing_parameters']}")
        best = best_check(history, final["best_epoch"])
        logged = log_model(context, run, duckdb, path, tower.encoder, best["check"])
        valid = next(ds for ds, ctx, _ in inputs if ctx == "validation")
        result = record_checkpoint(
            context,
            mlflow,
            root,
            path,
            config_dict(tower, tcfg),
            fingerprint,
            final,
            history,
            tower.encoder,
            parallel,
            run=run,
            logged=logged,
            valid=valid,
        )
    return dg.MaterializeResult(
        metadata={**result.metadata, "mlflow_run_id": logged["run_id"], "logged_model": logged["model_uri"]}
    )


def best_check(history: list[dict], best_epoch: float) -> dict:
    """The validation check whose weights the checkpoint keeps (early stopping's best)."""
    return next((r for r in history if r["epoch"] == best_epoch), history[-1])


def log_model(
    context: dg.AssetExecutionContext, run, duckdb: DuckDBResource, checkpoint: Path, encoder: str, check: int
) -> dict:
    """The checkpoint as an MLflow pyfunc model of the training run, named by family and encoder
    (`two_tower_<encoder>`), recorded in the checkpoint folder (mlflow.json) so promotion
    registers exactly this logged model. Logged at the step of the best `check`: MLflow copies
    the run's figures of that step onto the model, so the model carries the checkpoint's figures,
    not the first check's."""
    model, _, _ = load_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory(dir=checkpoint.parent) as tmp:  # MLflow keeps its own copy
        with duckdb.get_connection() as con:
            bundle = write_bundle(con, model, checkpoint, Path(tmp) / "bundle", log=context.log.info)
            example_user, example_recent = con.execute(
                "SELECT user_id, list(item_id ORDER BY ts)[-3:] FROM interaction_splits "
                "GROUP BY user_id ORDER BY user_id LIMIT 1"
            ).fetchone()
        logged = log_pyfunc(
            run.tracking_uri,
            run.run_id,
            bundle,
            example_user,
            list(example_recent),
            name=f"two_tower_{encoder}",
            step=check,
        )
    run.client.set_logged_model_tags(
        logged["model_id"],
        {
            "mlflow.note.content": f"Two-tower retriever ({encoder} user encoder) as a pyfunc: user ids (and "
            f"optional recent items) in, top-k items out. Checkpoint {checkpoint.name}: the weights of "
            f"validation check {check}, the best valid NDCG@10 of its training; trained on the train split "
            "of interaction_splits, the catalog from clean_items.",
            "checkpoint": checkpoint.name,
        },
    )
    write_json_atomic(checkpoint / "mlflow.json", logged)
    context.log.info(f"logged model {logged['model_uri']} in MLflow run {run.run_id}")
    return logged


def record_checkpoint(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracker,
    root: Path,
    path: Path,
    cfg: dict,
    fingerprint: str,
    final: dict,
    history: list[dict],
    encoder: str,
    parallel: dict,
    run=None,
    logged: dict | None = None,
    valid=None,
) -> dg.MaterializeResult:
    """After training, in this process however it trained: curves, the models manifest, MLflow
    and the materialization's metadata."""
    png = training_curves(history, path / "curves.png")
    update_manifest(root, latest=path.name)
    best = best_check(history, final["best_epoch"])
    if run is not None:  # the training's own run: the checkpoint's figures, config, weights and curves
        summary = {k: v for k, v in final.items() if isinstance(v, (int, float)) and not k.startswith("valid_")}
        run.log(
            summary,
            step=best["check"],
            params={"stopped_by": final.get("stopped_by"), "checkpoint": path.name},
            artifacts=[path / "config.json", png],
        )
        # measured on the validation split: the logged model carries them and lists that dataset
        run.log(
            {k: v for k, v in best.items() if k.startswith("valid_")},
            step=best["check"],
            model_id=logged["model_id"] if logged else None,
            dataset=valid,
        )
    mlflow.log(
        context,
        "two_tower_model",
        {k: v for k, v in final.items() if isinstance(v, (int, float))},
        params={
            "stopped_by": final.get("stopped_by"),
            "workers": parallel["workers"],
            **{f"tower.{k}": v for k, v in cfg["tower"].items()},
            **{f"train.{k}": v for k, v in cfg["train"].items()},
            "vocabulary_fingerprint": fingerprint,
            "checkpoint": path.name,
        },
        step=len(history),
    )
    epochs = [
        (
            f"{r['epoch']:g}" + (" (checkpoint)" if r is best else ""),
            round(r["loss"], 4),
            round(r.get("valid_ndcg@10", float("nan")), 4),
            round(r.get("valid_hr@10", float("nan")), 4),
            round(r["train_seconds"], 1),
            round(r.get("eval_seconds", 0.0), 1),
        )
        for r in history
    ]
    return dg.MaterializeResult(
        metadata={
            **figures_metadata(
                {
                    **final,
                    **parallel,
                    "checkpoint": str(path),
                    "version": path.name,
                    "encoder": encoder,
                    "vocabulary_fingerprint": fingerprint,
                },
                tables={
                    "epochs": md_table(epochs, ("epoch", "loss", "valid NDCG@10", "valid HR@10", "train s", "valid s"))
                },
            ),
            "curves": dg.MetadataValue.md(curves_markdown(history, best, logged, run)),
            "curves_file": dg.MetadataValue.path(str(png)),
        }
    )


def curves_markdown(history: list[dict], best: dict, logged: dict | None, run) -> str:
    """The training curves for the Dagster UI: the picture as the MLflow UI serves it (the UI's
    Markdown shows http images only, not files or inline data; it appears while `mlflow ui`
    runs) above valid NDCG@10 per check as bars, which need nothing running."""
    top = max((r.get("valid_ndcg@10", 0.0) for r in history), default=0.0) or 1.0
    rows = [
        (
            f"{r['epoch']:g}",
            f"{r.get('valid_ndcg@10', float('nan')):.4f}",
            "█" * round(20 * r.get("valid_ndcg@10", 0.0) / top),
            "checkpoint" if r is best else "",
        )
        for r in history
    ]
    image = ""
    if run is not None:
        image = (
            f"![training curves]({MLFLOW_UI}/get-artifact?path=curves.png&run_uuid={run.run_id})\n\n"
            f"(the picture comes from `mlflow ui`; the file is `curves_file`)\n\n"
        )
    return image + md_table(rows, ("epoch", "valid NDCG@10", "", ""))
