"""The champion two-tower checkpoint, loaded the same way by every caller (no Dagster).

The champion is the models manifest's "current" (`checkpoint.champion_version`), which the
`promoted_model` asset writes after model_evaluation's blocking check passed; it is loaded
against the warehouse's vocabulary fingerprint, so a checkpoint trained under other
vocabularies is refused (`checkpoint.VocabularyMismatch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.artifacts import Layout
from models.retrieval.checkpoint import champion_version, load_checkpoint
from models.retrieval.towers import TwoTower


class NoChampion(LookupError):
    """Nothing promoted yet."""


@dataclass
class Champion:
    version: str
    model: TwoTower
    meta: dict
    fingerprint: str  # the warehouse's vocabulary fingerprint it was checked against


def load_champion(con, artifacts_root: Path) -> Champion:
    """The promoted checkpoint, checked against the vocabularies in the warehouse `con` opens."""
    root = Layout(artifacts_root).models
    version = champion_version(artifacts_root)
    if not version:
        raise NoChampion(
            f'no promoted two-tower checkpoint ({root / "manifest.json"} has no "current"): the promoted_model '
            "asset sets it once model_evaluation's blocking check (beats popularity on valid NDCG@10) passes; "
            "materialize the training group"
        )
    fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
    model, meta, _ = load_checkpoint(root / version, expected_fingerprint=fingerprint)
    return Champion(version, model, meta, fingerprint)
