"""item_semantic_ids: a 4-token semantic ID for every catalog item from its two-tower item vector."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL, code_version
from assets._config import to_library
from assets.generative.config import SemanticIdConfig
from models.artifacts import Layout
from models.generative.semantic_ids import TokenizerConfig
from assets.reporting import content_version, figures_metadata, md_table
from models.generative.store import refresh_semantic_ids, write_warehouse
from models.generative.training import promoted_generative_version
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["item_embeddings"],
    kinds={"pytorch", "duckdb", "parquet"},
    owners=["team:recsys"],
    tags={"layer": "model"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def item_semantic_ids(
    context: dg.AssetExecutionContext,
    config: SemanticIdConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """(item_id, c1, c2, c3, c4) for every item in item_embeddings (the champion two-tower's
    vectors; items never trained are embedded from content), in the warehouse table
    `item_semantic_ids` and artifacts/semantic_ids/. c1..c3 come from an RQ-VAE (or residual
    k-means) over the vectors, c4 numbers the items sharing c1..c3. When the vectors come from the
    same two-tower model as the tokenizer, only items without a code are encoded (the incremental
    item path: new items become generable without retraining anything). The only writer of
    both: once an ETEGRec retriever is promoted, the incremental refresh adopts the tokenizer it
    trained (and its codes), so new items get codes from the tokenizer the served retriever
    learned (models/generative/store.py)."""
    root = Layout(paths.artifacts).semantic_ids
    generative = Layout(paths.artifacts).generative
    promoted = promoted_generative_version(generative)
    sid, manifest = refresh_semantic_ids(
        root,
        Layout(paths.artifacts).embeddings,
        to_library(config, TokenizerConfig),
        retrain=config.retrain,
        promoted=generative / promoted if promoted else None,
        log=context.log.info,
    )
    with duckdb.get_connection() as con:
        sql = write_warehouse(con, sid, manifest["tokenizer"])
    s = sid.stats
    figures = {
        **{k: v for k, v in s.items() if not isinstance(v, dict)},
        "tokenizer": manifest["tokenizer"],
        "kind": manifest["tokenizer_config"]["kind"],
        "two_tower_version": manifest["two_tower_version"],
        "codes_file": str(root / manifest["codes"]),
    }
    mlflow.log(
        context,
        "item_semantic_ids",
        {k: v for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        params={
            "tokenizer": manifest["tokenizer"],
            **{f"tokenizer.{k}": v for k, v in manifest["tokenizer_config"].items()},
        },
        artifacts=[root / "manifest.json"],
    )
    levels = [(f"c{i}", round(s[f"utilisation_c{i}"], 4)) for i in (1, 2, 3)]
    lengths = [(k, round(s[f"unique_at_length_{k}"], 4)) for k in (1, 2, 3, 4)]
    return dg.MaterializeResult(
        metadata=figures_metadata(
            figures,
            sql={"item_semantic_ids": sql},
            tables={
                "codebook_utilisation": md_table(levels, ("level", "share of codes used")),
                "code_length_distribution": md_table(lengths, ("shortest unique prefix", "share of items")),
            },
        ),
        # the codes' digest and the tokenizer: a refresh that encoded no item keeps the version
        data_version=content_version(context, manifest["tokenizer"], manifest["codes_sha256"]),
    )
