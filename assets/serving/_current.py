"""The promoted checkpoint and the tensors serving needs, loaded the same way by every asset."""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from models.checkpoint import load_checkpoint, read_manifest
from models.data import Catalog, load_catalog


@dataclass
class Current:
    version: str
    model: object
    meta: dict
    catalog: Catalog | None
    fingerprint: str


def current_model(con, paths, catalog: bool = True) -> Current:
    root: Path = paths.artifacts / "models"
    version = read_manifest(root).get("current")
    if not version:
        raise dg.Failure("no promoted checkpoint: model_evaluation promotes one only when it beats popularity")
    fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
    model, meta, _ = load_checkpoint(root / version, expected_fingerprint=fingerprint)
    items = load_catalog(con, n_hashes=model.cfg.n_hashes, item_buckets=model.cfg.item_buckets)[0] if catalog else None
    return Current(version, model, meta, items, fingerprint)
