"""two_tower_model: train the towers on the train split, early-stop on valid NDCG@10, checkpoint."""


import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.config import TrainingConfig
from assets.reporting import figures_metadata, md_table
from models.retrieval.checkpoint import load_checkpoint, read_manifest, save_checkpoint, update_manifest
from models.retrieval.data import WarehouseShape, load_from_warehouse, tower_config_for
from models.retrieval.plots import training_curves
from models.retrieval.towers import TowerConfig
from models.retrieval.training import TrainConfig, config_dict, train
from orchestration.resources import MlflowTracker, TowerflowPaths


def tower_config(cfg: TrainingConfig, shape: WarehouseShape) -> TowerConfig:
    return tower_config_for(shape, item_buckets=cfg.item_buckets, user_buckets=cfg.user_buckets, dim=cfg.dim,
                            hidden=cfg.hidden, history_len=cfg.history_len, encoder=cfg.encoder,
                            id_dropout=cfg.id_dropout, use_content=cfg.use_content, recency=cfg.recency)


@dg.asset(deps=["vocabularies", "interaction_splits", "clean_items", "clean_interactions"],
          kinds={"pytorch"}, owners=["team:recsys"], tags={"layer": "model"})
def two_tower_model(context: dg.AssetExecutionContext, config: TrainingConfig, paths: TowerflowPaths,
                    duckdb: DuckDBResource, mlflow: MlflowTracker) -> dg.MaterializeResult:
    """A user/item tower pair trained with sampled softmax (in-batch + shared uniform + hard
    negatives, logQ-corrected), checkpointed with its config and vocabulary fingerprint."""
    with duckdb.get_connection() as con:
        fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
        tower = tower_config(config, WarehouseShape.read(con))
        data = load_from_warehouse(con, history_len=tower.history_len, n_hashes=tower.n_hashes,
                                   item_buckets=tower.item_buckets, user_buckets=tower.user_buckets)
    tcfg = TrainConfig(loss=config.loss, temperature=config.temperature, logq_correction=config.logq_correction,
                       extra_negatives=config.extra_negatives, hard_negatives=config.hard_negatives,
                       batch_size=config.batch_size, epochs=config.epochs, lr=config.lr, patience=config.patience,
                       window_stride=config.window_stride, seed=config.seed)
    root = paths.artifacts / "models"
    init_state = None
    if config.resume:
        latest = read_manifest(root).get("latest")
        if latest:
            _, meta, init_state = load_checkpoint(root / latest, expected_fingerprint=fingerprint)
            context.log.info(f"resuming from checkpoint {latest}")
    context.log.info(f"training {tower.encoder} towers on {len(data.train):,} train rows, "
                     f"{len(data.catalog):,} items, {len(data.valid):,} valid users")

    def on_epoch(epoch: int, row: dict) -> None:
        mlflow.log(context, "two_tower_model", {k: v for k, v in row.items() if k != "epoch"}, step=epoch)

    result = train(data.catalog, data.train, tower, tcfg, valid=data.valid, log=context.log.info,
                   on_epoch=on_epoch, init_state=init_state)
    cfg = config_dict(tower, tcfg)
    final = {"best_epoch": result.best_epoch, "epochs_run": len(result.history), "steps": result.steps,
             "train_seconds": round(result.seconds, 2),
             "examples_per_second": round(result.examples / max(result.seconds, 1e-9), 1),
             **{k: round(v, 5) for k, v in result.best_valid.items()}}
    path = save_checkpoint(root, result.model, cfg, fingerprint, metrics=final,
                           optimizer_states=result.optimizer_states)
    png = training_curves(result.history, path / "curves.png")
    update_manifest(root, latest=path.name)
    mlflow.log(context, "two_tower_model", final,
               params={**{f"tower.{k}": v for k, v in cfg["tower"].items()},
                       **{f"train.{k}": v for k, v in cfg["train"].items()}, "vocabulary_fingerprint": fingerprint,
                       "checkpoint": path.name},
               artifacts=[path / "config.json", path / "model.pt", png], step=len(result.history))
    epochs = [(r["epoch"], round(r["loss"], 4), round(r.get("valid_ndcg@10", float("nan")), 4),
               round(r.get("valid_hr@10", float("nan")), 4), round(r["epoch_seconds"], 1)) for r in result.history]
    return dg.MaterializeResult(metadata={
        **figures_metadata({**final, "checkpoint": str(path), "version": path.name, "encoder": tower.encoder,
                            "vocabulary_fingerprint": fingerprint},
                           tables={"epochs": md_table(epochs, ("epoch", "loss", "valid NDCG@10", "valid HR@10", "seconds"))}),
        "curves": dg.MetadataValue.path(str(png)),
    })
