"""Where semantic IDs live (no Dagster): the tokenizer that made them and the code table.

    artifacts/semantic_ids/tokenizers/<version>/tokenizer.pt   state dict (torch.load weights_only=True)
    artifacts/semantic_ids/tokenizers/<version>/config.json    TokenizerConfig, vector dim, two-tower version
    artifacts/semantic_ids/codes-<stamp>.parquet                item_id, c1, c2, c3, c4
    artifacts/semantic_ids/manifest.json                        the tokenizer version and codes file in use

and the warehouse table `item_semantic_ids` (sql/item_semantic_ids.sql). Every write is atomic and
the manifest is replaced last, so a reader sees one consistent tokenizer + table.

Two writers: `item_semantic_ids` (`refresh_semantic_ids`) and, in ETEGRec mode, `generative_retriever`
(`publish_joint_tokenizer`), whose training moves the tokenizer: it publishes that tokenizer as a new
version with every item's codes from it, so the retriever, its evaluation, serving and the
incremental item path all read the codes it was trained on.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models.artifacts import atomic_file, atomic_folder, file_sha256, read_manifest, write_manifest
from models.generative.semantic_ids import CODE_COLUMNS, SemanticIds, TokenizerConfig, build_tokenizer
from models.sql import run_sql


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def save_tokenizer(root: Path, tokenizer, meta: dict) -> str:
    version = _stamp()
    with atomic_folder(root / "tokenizers", version) as tmp:
        torch.save(tokenizer.state_dict(), tmp / "tokenizer.pt")
        (tmp / "config.json").write_text(
            json.dumps(
                {"version": version, "tokenizer": tokenizer.cfg.to_dict(), "dim": tokenizer.dim, **meta},
                indent=2,
                sort_keys=True,
                default=str,
            )
        )
    return version


def load_tokenizer(root: Path, version: str):
    """(tokenizer in eval mode, its config.json)."""
    folder = root / "tokenizers" / version
    meta = json.loads((folder / "config.json").read_text())
    tok = build_tokenizer(TokenizerConfig(**meta["tokenizer"]), meta["dim"])
    tok.load_state_dict(torch.load(folder / "tokenizer.pt", weights_only=True))
    tok.eval()
    return tok, meta


def write_codes(root: Path, sid: SemanticIds, manifest: dict) -> dict:
    """Write the code table as a new Parquet file, then the manifest naming it; older code files go."""
    name = f"codes-{_stamp()}.parquet"
    table = pa.table(
        {
            "item_id": pa.array(list(sid.item_ids), pa.string()),
            **{c: pa.array(sid.codes[:, i], pa.int32()) for i, c in enumerate(CODE_COLUMNS)},
        }
    )
    with atomic_file(root / name) as tmp:
        pq.write_table(table, tmp)
    manifest = {
        **manifest,
        "codes": name,
        "count": len(sid.item_ids),
        "codes_sha256": file_sha256(root / name),
        "stats": sid.stats,
    }
    write_manifest(root, manifest)
    for f in root.glob("codes-*.parquet"):
        if f.name != name:
            f.unlink()
    return manifest


def read_codes(root: Path) -> tuple[SemanticIds, dict]:
    """The code table the manifest names, and the manifest."""
    manifest = read_manifest(root)
    if manifest is None:
        raise FileNotFoundError(f"no semantic IDs in {root}: materialize item_semantic_ids first")
    t = pq.read_table(root / manifest["codes"])
    codes = (
        np.stack([t[c].to_numpy().astype(np.int64) for c in CODE_COLUMNS], 1)
        if t.num_rows
        else np.empty((0, 4), np.int64)
    )
    return SemanticIds(np.asarray(t["item_id"].to_pylist(), dtype=object), codes, manifest.get("stats", {})), manifest


def write_warehouse(con, sid: SemanticIds, tokenizer_version: str) -> str:
    """Replace the warehouse table item_semantic_ids; returns the SQL text for metadata."""
    semantic_id_rows = sid.frame()
    con.register("semantic_id_rows", semantic_id_rows)
    try:
        return run_sql(con, "item_semantic_ids", {"tokenizer_version": tokenizer_version})
    finally:
        con.unregister("semantic_id_rows")


def refresh_semantic_ids(
    root: Path, embeddings_folder: Path, cfg: TokenizerConfig, *, retrain: bool = False, log=lambda m: None
) -> tuple[SemanticIds, dict]:
    """Codes for every item in item_embeddings. A new tokenizer is trained when asked, when there
    is none, or when the vectors come from another two-tower model; otherwise the trained
    tokenizer encodes only the items without a code (new catalog items), the others keep theirs,
    so a trained retriever can generate new items without retraining. A changed `cfg` alone does
    not retrain (the sensor's job runs with default config; retraining would change every code
    under the trained retriever): it applies at the next new two-tower model, or with `retrain`."""
    from models.generative.semantic_ids import fit_tokenizer, tokenize
    from models.index.embeddings import read_embeddings

    emb = read_manifest(embeddings_folder)
    if emb is None:
        raise FileNotFoundError(f"no item embeddings in {embeddings_folder}: materialize item_embeddings first")
    _, item_ids, xb = read_embeddings(embeddings_folder)
    prev = read_manifest(root)
    reason = (
        "asked"
        if retrain
        else "no tokenizer yet"
        if prev is None
        else "new two-tower model"
        if prev["two_tower_version"] != emb["model_version"]
        else None
    )
    if reason:
        log(f"item_semantic_ids: training a {cfg.kind} tokenizer on {len(xb):,} item vectors ({reason})")
        tok, fit = fit_tokenizer(xb, cfg, log=log)
        version = save_tokenizer(root, tok, {"two_tower_version": emb["model_version"], "fit": fit})
        sid = tokenize(tok, item_ids, xb)
        mode = {"mode": "trained", "reason": reason, **{f"fit_{k}": v for k, v in fit.items()}}
    else:
        version = prev["tokenizer"]
        tok, _ = load_tokenizer(root, version)
        existing, _ = read_codes(root)
        sid = tokenize(tok, item_ids, xb, existing=existing)
        mode = {"mode": "incremental", "reason": "same two-tower model and tokenizer config"}
        log(
            f"item_semantic_ids: encoded {sid.stats['encoded']:,} new items with tokenizer {version}, "
            f"{sid.stats['kept']:,} kept their codes"
        )
    sid.stats.update(mode)
    manifest = write_codes(
        root,
        sid,
        {
            "tokenizer": version,
            "tokenizer_config": tok.cfg.to_dict(),
            "two_tower_version": emb["model_version"],
            "embeddings_sha256": emb["sha256"],
        },
    )
    return sid, manifest


def joint_training_inputs(root: Path, embeddings_folder: Path):
    """(tokenizer, its manifest, item ids, item vectors) for ETEGRec training: the current
    tokenizer and the item_embeddings vectors it encoded. Refuses vectors from another two-tower
    model than the tokenizer's (item_semantic_ids has not caught up with a new champion)."""
    from models.index.embeddings import read_embeddings

    sid_manifest = read_manifest(root)
    emb = read_manifest(embeddings_folder)
    if sid_manifest is None or emb is None:
        raise FileNotFoundError("ETEGRec training needs item_embeddings and item_semantic_ids: materialize them first")
    if sid_manifest["two_tower_version"] != emb["model_version"]:
        raise ValueError(
            f"the semantic IDs come from two-tower {sid_manifest['two_tower_version']}, the item embeddings "
            f"from {emb['model_version']}: materialize item_semantic_ids first"
        )
    tok, _ = load_tokenizer(root, sid_manifest["tokenizer"])
    _, item_ids, xb = read_embeddings(embeddings_folder)
    return tok, sid_manifest, item_ids, xb


def publish_joint_tokenizer(root: Path, tokenizer, sid: SemanticIds, prior: dict, meta: dict) -> dict:
    """Save the tokenizer ETEGRec training moved as a new version and make its codes current (the
    manifest `prior` names the tokenizer it started from); returns the new manifest."""
    version = save_tokenizer(
        root, tokenizer, {"two_tower_version": prior["two_tower_version"], "parent": prior["tokenizer"], **meta}
    )
    sid.stats.update(mode="joint", reason=f"trained with the retriever (etegrec) from tokenizer {prior['tokenizer']}")
    return write_codes(
        root,
        sid,
        {
            "tokenizer": version,
            "tokenizer_config": tokenizer.cfg.to_dict(),
            "two_tower_version": prior["two_tower_version"],
            "embeddings_sha256": prior["embeddings_sha256"],
        },
    )
