"""generative_evaluation: the generative retriever on the same valid/test users as model_evaluation,
next to the two-tower champion and popularity. It only measures: the blocking check
`generative_beats_chance_on_valid_hr` (checks.py, where the rule lives) decides, and
`promoted_generative` promotes after it passed."""

import json

import dagster as dg
import torch
from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL, code_version
from assets.generative.config import GenerativeEvaluationConfig
from assets.reporting import figures_metadata, md_table
from models.artifacts import Layout, write_json_atomic
from models.generative.beam import PrefixTrie
from models.generative.store import pair_codes
from models.generative.semantic_ids import codes_by_position
from models.generative.training import evaluate_generative, latest_generative, load_generative
from models.retrieval.checkpoint import champion_version
from models.retrieval.data import load_from_warehouse
from orchestration.resources import MlflowTracker, TowerflowPaths

KS = (10, 20)


@dg.asset(
    deps=["generative_retriever", "promoted_model"],
    kinds={"pytorch"},
    owners=["team:recsys"],
    tags={"layer": "model"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def generative_evaluation(
    context: dg.AssetExecutionContext,
    config: GenerativeEvaluationConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """HR/NDCG@10 and @20 of beam search over the whole catalog's codes (seen items removed from
    the beam, a target outside it is a miss) on valid and test, with the beam width and decode
    milliseconds per user; the two-tower champion's and popularity's figures on the same users
    come from model_evaluation's evaluation.json. The codes are the checkpoint's pair
    (models.generative.store.pair_codes), as serving reads them."""
    root = Layout(paths.artifacts).generative
    version = latest_generative(root)
    if not version:
        raise dg.Failure("no generative checkpoint: materialize generative_retriever first")
    model, meta = load_generative(root / version)
    sid, codes_from = pair_codes(paths.artifacts, root / version, meta)
    context.log.info(f"codes: {codes_from}")
    with duckdb.get_connection() as con:
        # only the sampled users' sets are built (EvalSet.sample's users: load_from_warehouse)
        data = load_from_warehouse(
            con,
            history_len=model.cfg.history_len,
            n_hashes=1,
            item_buckets=2,
            user_buckets=2,
            max_hard=0,
            sample=(config.eval_users, config.seed),
        )
    table = codes_by_position(data.catalog, sid.item_ids, sid.codes)
    trie = PrefixTrie(table[:-1], model.cfg.level_sizes)
    beam = config.beam or int(meta["train"]["beam"])
    gen = {}
    for split, sample in (("valid", data.valid), ("test", data.test)):  # keyed by split: a sample names itself
        gen[split] = evaluate_generative(
            model, trie, torch.as_tensor(table), sample, beam=beam, ks=KS, log=context.log.info
        )
    champion = champion_version(paths.artifacts)
    two_tower = json.loads((Layout(paths.artifacts).models / champion / "evaluation.json").read_text())
    metrics = {
        "generative": gen,
        "two_tower": {s: two_tower["model"][s] for s in ("valid", "test")},
        "popularity": {s: two_tower["popularity"][s] for s in ("valid", "test")},
        "generative_version": version,
        "two_tower_version": champion,
        "tokenizer": meta["tokenizer"],
        "codes": codes_from,
        "beam": beam,
        "eval_users": config.eval_users,
    }
    write_json_atomic(root / version / "evaluation.json", metrics)
    flat = {
        f"{who}.{split}.{k}": v
        for who in ("generative", "two_tower", "popularity")
        for split in ("valid", "test")
        for k, v in metrics[who][split].items()
        if k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "users", "chance_hr@10")
    }
    flat.update({f"generative.{s}.decode_ms_per_user": gen[s]["decode_ms_per_user"] for s in gen})
    mlflow.log(
        context,
        "generative_evaluation",
        flat,
        params={"generative_checkpoint": version, "beam": beam},
        artifacts=[root / version / "evaluation.json"],
    )
    rows = [
        (
            split,
            who,
            int(metrics[who][split]["users"]),
            *(round(metrics[who][split][k], 4) for k in ("hr@10", "ndcg@10")),
        )
        for split in ("valid", "test")
        for who in ("generative", "two_tower", "popularity")
    ]
    t = gen["test"]
    figures = {
        "version": version,
        "beam": beam,
        "test_ndcg@10": t["ndcg@10"],
        "test_hr@10": t["hr@10"],
        "valid_hr@10": gen["valid"]["hr@10"],
        "valid_chance_hr@10": gen["valid"]["chance_hr@10"],
        "test_ndcg@10_two_tower": metrics["two_tower"]["test"]["ndcg@10"],
        "test_ndcg@10_popularity": metrics["popularity"]["test"]["ndcg@10"],
        "ratio_to_two_tower": t["ndcg@10"] / max(metrics["two_tower"]["test"]["ndcg@10"], 1e-12),
        "decode_ms_per_user": t["decode_ms_per_user"],
        "coverage@10": t["coverage@10"],
        "eval_users_test": int(t["users"]),
    }
    return dg.MaterializeResult(
        metadata={
            **figures_metadata(
                figures, tables={"metrics": md_table(rows, ("split", "retriever", "users", "HR@10", "NDCG@10"))}
            ),
            "evaluation": dg.MetadataValue.json(json.loads(json.dumps(metrics))),
        }
    )
