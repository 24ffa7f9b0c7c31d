"""The generative group's checks, each on what its asset wrote: item_semantic_ids' table, the
codes the retriever's checkpoint was trained with, and the promotion rule on the evaluation
(generative_evaluation measures, `generative_beats_chance_on_valid_hr` decides,
promoted_generative promotes: the two-tower's pattern)."""

import json

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.reporting import PROMOTION_GATE, check_result, md_table
from models.artifacts import Layout
from models.generative.store import checkpoint_codes, code_problems
from models.generative.training import latest_generative
from orchestration.versions import WAREHOUSE_POOL
from orchestration.resources import MlflowTracker, TowerflowPaths


def generative_passes(evaluation: dict) -> bool:
    """The promotion rule, in one place: on valid, the retriever's HR@10 beats what 10 random
    unseen catalog items would hit. A floor, not popularity: it stops a broken pair (codes that
    are not the ones it learned, a collapsed decoder) from serving, while a family that sits
    level with popularity at demo budgets (README) can still be served and compared."""
    v = evaluation["generative"]["valid"]
    return v["hr@10"] > v["chance_hr@10"]


def latest_generative_evaluation(paths: TowerflowPaths) -> dict:
    """evaluation.json of the latest generative checkpoint, as generative_evaluation wrote it."""
    version = latest_generative(Layout(paths.artifacts).generative)
    path = Layout(paths.artifacts).generative / str(version) / "evaluation.json"
    if not version or not path.exists():
        raise dg.Failure(f"generative checkpoint {version} has no evaluation: materialize generative_evaluation first")
    return json.loads(path.read_text())


def _codes_check(context, duckdb, mlflow, check: str, sid=None, figures: dict | None = None):
    with duckdb.get_connection() as con:
        bad, _ = code_problems(con, sid)
    return check_result(
        context,
        mlflow,
        check,
        not bad,
        {"offending_items": len(bad), "threshold": 0, **(figures or {})},
        tables={"offending_items_table": md_table(bad, ("item_id", "problem"))} if bad else None,
    )


@dg.asset_check(
    asset="item_semantic_ids",
    blocking=True,
    pool=WAREHOUSE_POOL,
    description="Every catalog item has a semantic ID and no two items share one (the generative "
    "retriever can only emit, and be scored on, items with a unique code).",
)
def every_item_has_a_unique_semantic_id(context, duckdb: DuckDBResource, mlflow: MlflowTracker):
    return _codes_check(context, duckdb, mlflow, "every_item_has_a_unique_semantic_id")


@dg.asset_check(
    asset="generative_retriever",
    blocking=True,
    pool=WAREHOUSE_POOL,
    description="The codes the latest checkpoint was trained with (its own codes.parquet: in ETEGRec "
    "mode from the tokenizer it trained) give every catalog item a code no other item shares.",
)
def generative_codes_are_unique(context, paths: TowerflowPaths, duckdb: DuckDBResource, mlflow: MlflowTracker):
    root = Layout(paths.artifacts).generative
    version = latest_generative(root)
    if not version:
        raise dg.Failure("no generative checkpoint: materialize generative_retriever first")
    return _codes_check(
        context,
        duckdb,
        mlflow,
        "generative_codes_are_unique",
        checkpoint_codes(root / version),
        {"checkpoint": version},
    )


@dg.asset_check(
    asset="generative_evaluation",
    blocking=True,
    description="The evaluated generative retriever hits more held-out items on valid (HR@10) than "
    "10 random unseen catalog items would. A warning when it does not: promoted_generative then "
    "promotes nothing and the champion (if any) keeps serving.",
)
def generative_beats_chance_on_valid_hr(context, paths: TowerflowPaths, mlflow: MlflowTracker):
    m = latest_generative_evaluation(paths)
    v = m["generative"]["valid"]
    return check_result(
        context,
        mlflow,
        "generative_beats_chance_on_valid_hr",
        generative_passes(m),
        {
            "valid_hr@10": v["hr@10"],
            "threshold_chance_hr@10": v["chance_hr@10"],
            "valid_hr@10_popularity": m["popularity"]["valid"]["hr@10"],
            "checkpoint": m["generative_version"],
        },
        severity=PROMOTION_GATE,
    )
