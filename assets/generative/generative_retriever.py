"""generative_retriever: the seq2seq model that generates the next item's semantic ID. Its
checkpoint is a self-contained pair (weights + the codes it was trained with, + in ETEGRec mode
the tokenizer it trained); it writes no table of another asset (models/generative/store.py)."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from orchestration.versions import WAREHOUSE_POOL, code_version
from assets._config import to_library
from assets.generative.config import GenerativeConfig
from models.generative.seq2seq import Seq2SeqConfig
from models.generative.training import GenTrainConfig
from assets.reporting import figures_metadata, md_table
from models.artifacts import Layout
from models.generative.etegrec import JointTokenizer
from models.generative.store import collision_size, joint_training_inputs, new_tokenizer_version, read_codes, write_pair
from models.generative.semantic_ids import codes_by_position
from models.generative.training import (
    save_generative,
    summary_metrics,
    train_config_dict,
    train_generative,
)
from models.retrieval.checkpoint import champion_version
from models.retrieval.plots import training_curves
from models.retrieval.data import load_from_warehouse
from orchestration.resources import MlflowTracker, TowerflowPaths


@dg.asset(
    deps=["item_semantic_ids", "interaction_splits"],
    kinds={"pytorch"},
    owners=["team:recsys"],
    tags={"layer": "model"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def generative_retriever(
    context: dg.AssetExecutionContext,
    config: GenerativeConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """A T5-style encoder-decoder over semantic-ID tokens, trained with teacher forcing on every
    train positive (the user's previous history_len positives -> the item's 4 codes), early-
    stopped on valid NDCG@10 of trie-constrained beam search, checkpointed under
    artifacts/generative/<version>/ with the tokenizer version it was trained on.

    The checkpoint holds the codes it was trained with (codes.parquet). With `mode: etegrec` the
    RQ-VAE tokenizer trains in alternation with the retriever (models/generative/etegrec.py); the
    moved tokenizer (a new tokenizer version, parent: the one it started from) and every item's
    codes from it are saved in the checkpoint, audited by this asset's blocking check
    `generative_codes_are_unique`. Evaluation and serving read them; once promoted, the next
    item_semantic_ids refresh adopts that tokenizer, so new items get codes from it."""
    root = Layout(paths.artifacts).semantic_ids
    sid, manifest = read_codes(root)
    joint = None
    tcfg = to_library(config, GenTrainConfig)
    with duckdb.get_connection() as con:
        fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
        # hashed-id features are unused here: the smallest tables keep loading cheap; only the
        # valid users early stopping decodes (train() would draw the same sample) are built
        data = load_from_warehouse(
            con,
            history_len=config.history_len,
            n_hashes=1,
            item_buckets=2,
            user_buckets=2,
            max_hard=0,
            sample=tcfg.valid_sample,
        )
    table = codes_by_position(data.catalog, sid.item_ids, sid.codes)
    model_cfg = to_library(
        config,
        Seq2SeqConfig,
        codebook_size=manifest["tokenizer_config"]["codebook_size"],
        collision_size=collision_size(manifest),
    )
    if tcfg.mode == "etegrec":
        try:
            tok, manifest, item_ids, xb = joint_training_inputs(root, Layout(paths.artifacts).embeddings)
            joint = JointTokenizer(tok, item_ids, xb, data.catalog)
        except (FileNotFoundError, ValueError) as e:
            raise dg.Failure(f"etegrec mode: {e}") from e
        table = None  # the codes come from the tokenizer as it trains
    context.log.info(
        f"training the generative retriever ({tcfg.mode}) on {len(data.train):,} train rows, "
        f"{len(data.catalog):,} items, tokenizer {manifest['tokenizer']}"
    )

    with mlflow.child_run(context, "generative_retriever", tags={"dagster_asset": "generative_retriever"}) as run:
        # the per-check figures are curves ("curve/" in the run's charts); the run's plain figures
        # are the checkpoint's own (its best check), logged once after training
        def log_check(epoch: int, row: dict) -> None:  # step = the row's epoch, counted from 1
            run.log({f"curve/{k}": v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

        result = train_generative(
            table, data.train, model_cfg, tcfg, valid=data.valid, log=context.log.info, on_check=log_check, joint=joint
        )
        final = summary_metrics(result)
        tokenizer, tokenizer_meta, trained_codes = manifest["tokenizer"], None, sid
        if joint is not None:
            tokenizer = new_tokenizer_version()
            tokenizer_meta = {
                "version": tokenizer,
                "two_tower_version": manifest["two_tower_version"],
                "parent": manifest["tokenizer"],
                "trained_with": "etegrec",
                "run": run.run_id,
            }
            trained_codes = result.semantic_ids
            context.log.info(f"etegrec: tokenizer {tokenizer} (from {manifest['tokenizer']}) saved with the checkpoint")
        path = save_generative(
            Layout(paths.artifacts).generative,
            result.model,
            {
                "train": train_config_dict(tcfg),
                "tokenizer": tokenizer,
                "metrics": final,
                "two_tower_version": champion_version(paths.artifacts),
                "vocabulary_fingerprint": fingerprint,
                "history": result.history,
            },
            result.optimizer_state,
            files=lambda folder: write_pair(folder, trained_codes, result.tokenizer, tokenizer_meta),
        )
        png = training_curves(result.history, path / "curves.png")
        run.log({**result.best_valid, "best_epoch": result.best_epoch}, step=result.best_epoch)
        run.log(
            params={
                "checkpoint": path.name,
                "tokenizer": tokenizer,
                **{f"model.{k}": v for k, v in model_cfg.to_dict().items()},
                **{f"train.{k}": v for k, v in train_config_dict(tcfg).items()},
            },
            artifacts=[path / "config.json", png],
        )
        mlflow.log(
            context,
            "generative_retriever",
            {k: v for k, v in final.items() if isinstance(v, (int, float))},
            params={
                "checkpoint": path.name,
                "tokenizer": tokenizer,
                "stopped_by": final["stopped_by"],
                **{f"model.{k}": v for k, v in model_cfg.to_dict().items()},
                **{f"train.{k}": v for k, v in train_config_dict(tcfg).items()},
            },
            artifacts=[path / "config.json"],
            step=len(result.history),
        )
    epochs = [
        (
            r["epoch"],
            "tokenizer" if r.get("tokenizer_epoch") else "retriever",
            round(r["loss"], 4),
            round(r.get("valid_ndcg@10", float("nan")), 4),
            round(r.get("valid_hr@10", float("nan")), 4),
            round(r["train_seconds"], 1),
            round(r.get("eval_seconds", 0.0), 1),
        )
        for r in result.history
    ]
    return dg.MaterializeResult(
        metadata=figures_metadata(
            {
                **final,
                "version": path.name,
                "checkpoint": str(path),
                "tokenizer": tokenizer,
                "mode": tcfg.mode,
                "parameters": sum(p.numel() for p in result.model.parameters()),
            },
            tables={
                "epochs": md_table(
                    epochs, ("epoch", "trains", "loss", "valid NDCG@10", "valid HR@10", "train s", "valid s")
                )
            },
        )
        | {"curves": dg.MetadataValue.path(str(png))}
    )
