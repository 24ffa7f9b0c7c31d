import dagster as dg
from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL, code_version
from assets.ranking.config import RankingConfig
from assets.reporting import figures_metadata, md_table
from models.ranking.labels import build_action_labels, describe, resolve_actions
from orchestration.resources import MlflowTracker


@dg.asset(
    deps=["clean_interactions"],
    kinds={"duckdb"},
    owners=["team:recsys"],
    tags={"layer": "ranking"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def action_labels(
    context: dg.AssetExecutionContext, config: RankingConfig, duckdb: DuckDBResource, mlflow: MlflowTracker
) -> dg.MaterializeResult:
    """One row per (user, item, time) exposure with a multi-hot action mask over the configured
    action vocabulary (an impression with no action: all zero), and the vocabulary itself
    (action_vocabulary: bit, name, weight in the ranking score)."""
    with duckdb.get_connection() as con:
        actions = resolve_actions(con, config.action_set, config.action_weights)
        sql = build_action_labels(con, actions)
        total, engaged = con.execute(
            "SELECT count(*), count(*) FILTER (action_mask <> 0) FROM action_labels"
        ).fetchall()[0]
        per_action = [
            (
                a.name,
                describe(a),
                a.weight,
                con.execute(
                    "SELECT count(*) FROM action_labels WHERE (action_mask >> $i) & 1 = 1", {"i": i}
                ).fetchall()[0][0],
            )
            for i, a in enumerate(actions)
        ]
    figures = {
        "exposures": int(total),
        "exposures_with_action": int(engaged),
        **{f"rows_{name}": int(n) for name, _, _, n in per_action},
    }
    mlflow.log(context, "action_labels", figures, params={"actions": ",".join(a.name for a in actions)})
    return dg.MaterializeResult(
        metadata=figures_metadata(
            figures,
            sql={"action_labels": sql},
            tables={"actions": md_table(per_action, ("action", "fired by", "weight", "exposures"))},
        )
    )
