import dagster as dg
from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL, code_version
from assets.ranking.config import RankingConfig
from assets.reporting import figures_metadata, md_table
from models.ranking.data import build_ranking_candidates
from models.retrieval.champion import load_champion
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["action_labels", "promoted_model", "interaction_splits"],
    kinds={"duckdb", "pytorch"},
    owners=["team:recsys"],
    tags={"layer": "ranking"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def ranking_candidates(
    context: dg.AssetExecutionContext,
    config: RankingConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """Per user and split (train / valid / test; train_cuts lists per user in train), the champion two-tower's top N for the history
    before the split's cut (seen items excluded, retrieval score kept), labelled with the
    actions the user took on them in the split's window; train rows add the window's exposures
    retrieval missed. Train rows use only train-period history and labels. Above `max_lists`
    lists a seeded sample of users keeps all its lists (users_kept < users_total in the metadata,
    and a `budget` line saying so)."""
    with duckdb.get_connection() as con:
        champion = load_champion(con, paths.artifacts)
        out = build_ranking_candidates(
            con,
            champion.model,
            n_candidates=config.n_candidates,
            label_share=config.label_share,
            train_cuts=config.train_cuts,
            max_lists=config.max_lists,
            seed=config.seed,
            log=context.log.info,
        )
    rows = [
        (
            s,
            out["users"].get(s, 0),
            out["lists"].get(s, 0),
            out["rows"].get(s, 0),
            round(out["target_retrieved"].get(s, 0.0), 4),
        )
        for s in ("train", "valid", "test")
    ]
    figures = {
        "retriever_version": champion.version,
        "n_candidates": config.n_candidates,
        "train_cuts": config.train_cuts,
        "max_lists": config.max_lists,
        "lists_total": out["lists_total"],  # before the budget
        "users_total": out["users_total"],
        "users_kept": out["users_kept"],  # < users_total: max_lists sampled the users
        **{f"lists_{s}": int(out["lists"].get(s, 0)) for s in ("train", "valid", "test")},
        **{f"rows_{s}": int(out["rows"].get(s, 0)) for s in ("train", "valid", "test")},
        **{f"target_retrieved_{s}": float(out["target_retrieved"].get(s, 0.0)) for s in ("train", "valid", "test")},
    }
    mlflow.log(
        context,
        "ranking_candidates",
        {k: v for k, v in figures.items() if isinstance(v, (int, float))},
        params={"retriever_version": champion.version},
    )
    figures["budget"] = (
        f"max_lists {config.max_lists:,}: {out['lists_total']:,} lists over {out['users_total']:,} users did "
        f"not fit; a seeded sample (seed {config.seed}) of {out['users_kept']:,} users keeps all its lists"
        if out["users_kept"] < out["users_total"]
        else f"every user ({out['users_total']:,}, {out['lists_total']:,} lists) within max_lists {config.max_lists:,}"
    )
    return dg.MaterializeResult(
        metadata=figures_metadata(
            figures,
            sql={"ranking_candidates": out["sql"]},
            tables={
                "splits": md_table(rows, ("split", "users", "lists (cuts)", "candidates", "held-out pair retrieved"))
            },
        )
    )
