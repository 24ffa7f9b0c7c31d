import dagster as dg
import torch
from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL, code_version
from assets._config import fields_for, to_library
from assets.ranking.config import RankingConfig
from assets.reporting import figures_metadata, md_table
from models.artifacts import Layout, read_manifest, write_manifest
from models.ranking.data import load_ranking_set
from models.ranking.features import ItemTimeline
from models.ranking.labels import read_vocabulary
from models.ranking.model import RankerConfig, ranker_config_for
from models.ranking.training import RankerTrainConfig, save_ranker, train_config_dict, train_ranker
from models.retrieval.checkpoint import champion_version
from models.retrieval.plots import training_curves
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["ranking_candidates"],
    kinds={"pytorch"},
    owners=["team:recsys"],
    tags={"layer": "ranking"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def ranking_model(
    context: dg.AssetExecutionContext,
    config: RankingConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """The candidate-isolation transformer (models/ranking/model.py) over the candidates and
    their features (models/ranking/features.py): per-action BCE + a listwise loss over each
    user's retrieved list, early-stopped on the valid NDCG@10 of the weighted score with action
    weights chosen on valid; a state-dict checkpoint under artifacts/ranking/<version>/ with its
    config, actions, the chosen weights (what the weighted score serves with) and the item
    snapshot its features are served from."""
    with duckdb.get_connection() as con:
        vocab = read_vocabulary(con)
        n_items, n_users = con.execute(
            "SELECT count(DISTINCT item_id), count(DISTINCT user_id) FROM action_labels"
        ).fetchall()[0]
        cfg = ranker_config_for([a["weight"] for a in vocab], n_items, n_users, **fields_for(config, RankerConfig))
        tcfg = to_library(config, RankerTrainConfig)
        timeline = ItemTimeline.from_warehouse(con, log=context.log.info)
        train_set = load_ranking_set(con, "train", cfg, timeline=timeline, log=context.log.info)
        valid_set = load_ranking_set(con, "valid", cfg, timeline=timeline, log=context.log.info)
    weights = torch.tensor([a["weight"] for a in vocab], dtype=torch.float32)
    context.log.info(f"training the ranker on {len(train_set):,} users' candidates, {len(vocab)} actions")
    with mlflow.child_run(context, "ranking_model", tags={"dagster_asset": "ranking_model"}) as run:
        result = train_ranker(train_set, valid_set, cfg, tcfg, weights, log=context.log.info)
        root = Layout(paths.artifacts).ranking
        chosen = [{**a, "weight": w} for a, w in zip(vocab, result.weights)]
        path = save_ranker(
            root,
            result.model,
            {
                "actions": chosen,  # the weighted score's weights, chosen on valid
                "vocabulary_weights": {a["name"]: a["weight"] for a in vocab},
                "negative_offset": config.negative_offset,
                "train": train_config_dict(tcfg),
                "history": result.history,
                "best_epoch": result.best_epoch,
                "stopped_by": result.stopped_by,
                "best_valid": result.best_valid,
                "retriever_version": champion_version(paths.artifacts),
            },
            snapshot=timeline.snapshot(),
        )
        png = training_curves(result.history, path / "curves.png")
        manifest = read_manifest(root) or {"current": None, "latest": None, "versions": []}
        manifest["versions"].append(path.name)
        manifest["latest"] = path.name
        write_manifest(root, manifest)
        # the training's own run: the per-epoch figures are curves ("curve/" in its charts); its
        # plain figures are the kept epoch's (best on valid), as the registered version's are
        for row in result.history:
            run.log({f"curve/{k}": v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        run.log(
            {
                **{f"valid_{k}": v for k, v in result.best_valid.items() if isinstance(v, (int, float))},
                "best_epoch": result.best_epoch,
            },
            step=result.best_epoch,
        )
        run.log(
            params={
                **{f"ranker.{k}": v for k, v in cfg.to_dict().items()},
                **{f"train.{k}": v for k, v in train_config_dict(tcfg).items()},
                "actions": ",".join(f"{a['name']}:{a['weight']}" for a in chosen),
                "checkpoint": path.name,
            },
            artifacts=[path / "config.json", png],
        )
        figures = {
            "version": path.name,
            "best_epoch": result.best_epoch,
            "stopped_by": result.stopped_by,
            "train_users": len(train_set),
            "valid_users": len(valid_set),
            "best_valid_ndcg@10": result.best_valid["ndcg@10"],
            "best_valid_hr@10": result.best_valid["hr@10"],
            **{f"weight_{a['name']}": a["weight"] for a in chosen},
        }
        mlflow.log(
            context,
            "ranking_model",
            {k: v for k, v in figures.items() if isinstance(v, (int, float))},
            params={
                **{f"ranker.{k}": v for k, v in cfg.to_dict().items()},
                **{f"train.{k}": v for k, v in train_config_dict(tcfg).items()},
                "actions": ",".join(f"{a['name']}:{a['weight']}" for a in chosen),
                "checkpoint": path.name,
            },
            artifacts=[path / "config.json", path / "ranker.pt", png],
            step=len(result.history),
        )
    epochs = [
        (
            r["epoch"],
            round(r["loss"], 4),
            round(r["valid_ndcg@10"], 4),
            round(r["valid_hr@10"], 4),
            round(r["train_seconds"], 1),
        )
        for r in result.history
    ]
    return dg.MaterializeResult(
        metadata={
            **figures_metadata(
                {**figures, "checkpoint": str(path)},
                tables={"epochs": md_table(epochs, ("epoch", "loss", "valid NDCG@10", "valid HR@10", "train s"))},
            ),
            "curves": dg.MetadataValue.path(str(png)),
        }
    )
