import hashlib
import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.config import VocabularyConfig
from assets.reporting import figures_metadata, log_figures, md_table
from assets.sqlfiles import run_sql
from orchestration.resources import MlflowTracker


def vocabulary_fingerprint(con, config: dict) -> str:
    """sha256 over every (vocabulary, key, idx) and the config: later artifacts record it, and
    a checkpoint trained against another vocabulary can be refused."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    cur = con.execute("SELECT vocabulary, key, idx FROM vocabularies ORDER BY vocabulary, idx")
    while batch := cur.fetchmany(100_000):
        h.update("\n".join(f"{v}\t{k}\t{i}" for v, k, i in batch).encode())
    return h.hexdigest()


@dg.asset(deps=["interaction_splits", "clean_items"], kinds={"duckdb"}, owners=["team:recsys"],
          tags={"layer": "gold"})
def vocabularies(context: dg.AssetExecutionContext, config: VocabularyConfig, duckdb: DuckDBResource,
                 mlflow: MlflowTracker) -> dg.MaterializeResult:
    """User, item, category and title-token vocabularies from the train split only, with a
    frequency floor and hash buckets (indices 1..num_buckets) for unseen or rare keys."""
    params = config.sql_params()
    with duckdb.get_connection() as con:
        sql = run_sql(con, "vocabularies", params)
        sizes = con.execute("SELECT vocabulary, count(*), sum(count) FROM vocabularies GROUP BY 1 ORDER BY 1").fetchall()
        fingerprint = vocabulary_fingerprint(con, params)
        con.execute("""CREATE OR REPLACE TABLE vocabulary_info AS
                       SELECT $fp AS fingerprint, $nb AS num_buckets, now() AS built_at""",
                    {"fp": fingerprint, "nb": config.num_buckets})
    figures = {f"{v}_size": n for v, n, _ in sizes}
    figures.update({"num_buckets": config.num_buckets, "fingerprint": fingerprint})
    for name in ("user_id", "item_id", "category", "title_token"):
        figures.setdefault(f"{name}_size", 0)
    context.log.info("vocabularies: " + ", ".join(f"{v}={n:,}" for v, n, _ in sizes) + f"; fingerprint {fingerprint[:12]}")
    log_figures(context, mlflow, "vocabularies", figures, params={"vocabulary_fingerprint": fingerprint})
    return dg.MaterializeResult(metadata=figures_metadata(
        figures, sql={"vocabularies": sql},
        tables={"sizes": md_table(sizes, ("vocabulary", "keys", "train interactions covered"))}))
