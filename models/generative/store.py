"""Where semantic IDs live (no Dagster): the tokenizer that made them and the code table.

    artifacts/semantic_ids/tokenizers/<version>/tokenizer.pt   state dict (torch.load weights_only=True)
    artifacts/semantic_ids/tokenizers/<version>/config.json    TokenizerConfig, vector dim, collision range, two-tower version
    artifacts/semantic_ids/codes-<stamp>.parquet                item_id, c1, c2, c3, c4
    artifacts/semantic_ids/manifest.json                        the tokenizer version and codes file in use

and the warehouse table `item_semantic_ids` (sql/item_semantic_ids.sql). Every write is atomic and
the manifest is replaced last, so a reader sees one consistent tokenizer + table.

One writer per table: the `item_semantic_ids` asset (`refresh_semantic_ids`) alone writes all of
the above. A generative checkpoint is a self-contained pair: its folder holds the codes it was
trained with (`codes.parquet`, `write_pair`) and, in ETEGRec mode, the tokenizer its training moved
(`tokenizer.pt` + `tokenizer.json`, a new tokenizer version whose parent is the one it started
from); the retriever's own check audits those codes. Who reads which codes:

- evaluation and serving (`pair_codes`): item_semantic_ids' table when it was made by the
  checkpoint's tokenizer (it then also holds the items encoded since), else the checkpoint's own.
- the new-items path (`refresh_semantic_ids`): once an ETEGRec retriever is promoted, the next
  incremental refresh adopts its tokenizer (copied in as a tokenizer version) and its codes, and
  encodes only the items without one, so new items get codes from the tokenizer the served
  retriever learned. A tokenizer is adopted only when it descends from the one in use: after a
  refit (a new two-tower model, or `retrain`) an older pair's tokenizer is not brought back.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from models.artifacts import Layout, atomic_file, atomic_folder, file_sha256, read_manifest, write_manifest
from models.generative.semantic_ids import CODE_COLUMNS, SemanticIds, TokenizerConfig, build_tokenizer
from models.sql import query, run_sql, sql_text


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def _tokenizer_config(tokenizer, version: str, meta: dict) -> str:
    return json.dumps(
        {
            "version": version,
            "tokenizer": tokenizer.cfg.to_dict(),
            "dim": tokenizer.dim,
            "collision_size": tokenizer.collision_size,
            **meta,
        },
        indent=2,
        sort_keys=True,
        default=str,
    )


def save_tokenizer(root: Path, tokenizer, meta: dict) -> str:
    version = _stamp()
    with atomic_folder(root / "tokenizers", version) as tmp:
        torch.save(tokenizer.state_dict(), tmp / "tokenizer.pt")
        (tmp / "config.json").write_text(_tokenizer_config(tokenizer, version, meta))
    return version


def load_tokenizer(root: Path, version: str):
    """(tokenizer in eval mode, its config.json)."""
    folder = root / "tokenizers" / version
    return _load_tokenizer(folder / "tokenizer.pt", folder / "config.json")


def _load_tokenizer(weights: Path, config: Path):
    meta = json.loads(config.read_text())
    cfg = TokenizerConfig(**meta["tokenizer"])
    tok = build_tokenizer(cfg, meta["dim"])
    tok.load_state_dict(torch.load(weights, weights_only=True))
    tok.collision_size = int(meta.get("collision_size", cfg.codebook_size))  # saved before it was sized: K
    tok.eval()
    return tok, meta


def write_codes(root: Path, sid: SemanticIds, manifest: dict) -> dict:
    """Write the code table as a new Parquet file, then the manifest naming it; older code files go."""
    name = f"codes-{_stamp()}.parquet"
    with atomic_file(root / name) as tmp:
        pq.write_table(_code_table(sid), tmp)
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


def _code_table(sid: SemanticIds) -> pa.Table:
    return pa.table(
        {
            "item_id": pa.array(list(sid.item_ids), pa.string()),
            **{c: pa.array(sid.codes[:, i], pa.int32()) for i, c in enumerate(CODE_COLUMNS)},
        }
    )


def _read_code_file(path: Path, stats: dict) -> SemanticIds:
    t = pq.read_table(path)
    codes = (
        np.stack([t[c].to_numpy().astype(np.int64) for c in CODE_COLUMNS], 1)
        if t.num_rows
        else np.empty((0, 4), np.int64)
    )
    return SemanticIds(np.asarray(t["item_id"].to_pylist(), dtype=object), codes, stats)


def collision_size(manifest: dict) -> int:
    """The collision token's range of the tokenizer a semantic-ID manifest names (what the
    retriever's vocabulary is built for); a manifest written before it was sized: the codebook size."""
    return int(manifest.get("collision_size", manifest["tokenizer_config"]["codebook_size"]))


def read_codes(root: Path) -> tuple[SemanticIds, dict]:
    """The code table the manifest names, and the manifest."""
    manifest = read_manifest(root)
    if manifest is None:
        raise FileNotFoundError(f"no semantic IDs in {root}: materialize item_semantic_ids first")
    return _read_code_file(root / manifest["codes"], manifest.get("stats", {})), manifest


# --- the generative checkpoint's own half of the pair ---------------------------------------

PAIR_CODES = "codes.parquet"  # the codes a checkpoint was trained with
PAIR_TOKENIZER = ("tokenizer.pt", "tokenizer.json")  # ETEGRec: the tokenizer its training moved


def new_tokenizer_version() -> str:
    return _stamp()


def write_pair(folder: Path, sid: SemanticIds, tokenizer=None, tokenizer_meta: dict | None = None) -> None:
    """Into a checkpoint folder being written: the codes it was trained with and, when its
    training moved the tokenizer (ETEGRec), that tokenizer (`tokenizer_meta` names its version,
    parent and two-tower model, as a tokenizer folder's config.json does)."""
    pq.write_table(_code_table(sid), folder / PAIR_CODES)
    if tokenizer is not None:
        meta = dict(tokenizer_meta or {})
        torch.save(tokenizer.state_dict(), folder / PAIR_TOKENIZER[0])
        (folder / PAIR_TOKENIZER[1]).write_text(_tokenizer_config(tokenizer, meta.pop("version"), meta))


def checkpoint_codes(folder: Path) -> SemanticIds:
    """The codes a generative checkpoint was trained with."""
    if not (folder / PAIR_CODES).exists():
        raise FileNotFoundError(f"{folder} holds no {PAIR_CODES}: materialize generative_retriever again")
    return _read_code_file(folder / PAIR_CODES, {})


def checkpoint_tokenizer_meta(folder: Path) -> dict | None:
    """The config of the tokenizer a checkpoint trained itself (ETEGRec), or None."""
    path = folder / PAIR_TOKENIZER[1]
    return json.loads(path.read_text()) if path.exists() else None


def pair_codes(artifacts_root: Path, folder: Path, meta: dict) -> tuple[SemanticIds, str]:
    """The codes a generative checkpoint (its folder and config.json) is evaluated and served
    with, and where they come from: item_semantic_ids' table when the checkpoint's tokenizer made
    it (it then also holds the items encoded since training), else the checkpoint's own codes
    (an ETEGRec pair before the new-items path adopted its tokenizer; a pair whose tokenizer was
    refit since)."""
    try:
        sid, manifest = read_codes(Layout(artifacts_root).semantic_ids)
    except FileNotFoundError:
        manifest = None
    if manifest is not None and manifest["tokenizer"] == meta["tokenizer"]:
        return sid, f"item_semantic_ids (tokenizer {manifest['tokenizer']})"
    return checkpoint_codes(folder), f"generative checkpoint {folder.name} (tokenizer {meta['tokenizer']})"


def code_problems(con, sid: SemanticIds | None = None) -> tuple[list[tuple], str]:
    """sql/audit_semantic_ids.sql (every catalog item has a code, no two items share one) over a
    code table: the warehouse table item_semantic_ids, or `sid` (a generative checkpoint's own
    codes). Returns the offending (item_id, problem) rows (zero rows = pass) and the SQL text."""
    rows = con.execute("SELECT item_id, c1, c2, c3, c4 FROM item_semantic_ids").df() if sid is None else sid.frame()
    con.register("semantic_id_rows", rows)
    try:
        return query(con, "audit_semantic_ids"), sql_text("audit_semantic_ids")
    finally:
        con.unregister("semantic_id_rows")


def write_warehouse(con, sid: SemanticIds, tokenizer_version: str) -> str:
    """Replace the warehouse table item_semantic_ids; returns the SQL text for metadata."""
    semantic_id_rows = sid.frame()
    con.register("semantic_id_rows", semantic_id_rows)
    try:
        return run_sql(con, "item_semantic_ids", {"tokenizer_version": tokenizer_version})
    finally:
        con.unregister("semantic_id_rows")


def refresh_semantic_ids(
    root: Path,
    embeddings_folder: Path,
    cfg: TokenizerConfig,
    *,
    retrain: bool = False,
    promoted: Path | None = None,
    log=lambda m: None,
) -> tuple[SemanticIds, dict]:
    """Codes for every item in item_embeddings. A new tokenizer is trained when asked, when there
    is none, or when the vectors come from another two-tower model; otherwise the trained
    tokenizer encodes only the items without a code (new catalog items), the others keep theirs,
    so a trained retriever can generate new items without retraining. A changed `cfg` alone does
    not retrain (the sensor's job runs with default config; retraining would change every code
    under the trained retriever): it applies at the next new two-tower model, or with `retrain`.

    `promoted` is the promoted generative checkpoint's folder, if any: when its training moved the
    tokenizer in use (ETEGRec), that tokenizer and the checkpoint's codes are adopted first."""
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
        joint = checkpoint_tokenizer_meta(promoted) if promoted is not None else None
        if joint is not None and joint["parent"] == prev["tokenizer"]:
            version = _adopt_tokenizer(root, promoted, joint)
            existing = checkpoint_codes(promoted)
            mode = {"mode": "incremental", "reason": f"adopted the promoted generative {promoted.name}'s tokenizer"}
            log(f"item_semantic_ids: adopting tokenizer {version}, trained by generative retriever {promoted.name}")
        else:
            version = prev["tokenizer"]
            existing, _ = read_codes(root)
            mode = {"mode": "incremental", "reason": "same two-tower model and tokenizer config"}
        tok, _ = load_tokenizer(root, version)
        sid = tokenize(tok, item_ids, xb, existing=existing)
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
            "collision_size": tok.collision_size,
            "two_tower_version": emb["model_version"],
            "embeddings_sha256": emb["sha256"],
        },
    )
    return sid, manifest


def _adopt_tokenizer(root: Path, checkpoint: Path, meta: dict) -> str:
    """Copy a checkpoint's own tokenizer in as a tokenizer version (under its own version name)."""
    version = meta["version"]
    if not (root / "tokenizers" / version).exists():
        with atomic_folder(root / "tokenizers", version) as tmp:
            shutil.copy2(checkpoint / PAIR_TOKENIZER[0], tmp / "tokenizer.pt")
            shutil.copy2(checkpoint / PAIR_TOKENIZER[1], tmp / "config.json")
    return version


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
