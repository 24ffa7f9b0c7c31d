"""The promoted checkpoint, and the Recommender over it, loaded the same way by every asset."""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from models.retrieval.checkpoint import champion_version, load_checkpoint
from models.retrieval.inference import ServingError, sample_users, user_vectors_of
from models.serving.recommender import Recommender


@dataclass
class Current:
    version: str
    model: object
    meta: dict
    fingerprint: str


def current_model(con, paths) -> Current:
    root: Path = paths.artifacts / "models"
    version = champion_version(paths.artifacts)
    if not version:
        raise dg.Failure("no promoted checkpoint: model_evaluation promotes one only when it beats popularity")
    fingerprint = con.execute("SELECT fingerprint FROM vocabulary_info").fetchall()[0][0]
    model, meta, _ = load_checkpoint(root / version, expected_fingerprint=fingerprint)
    return Current(version, model, meta, fingerprint)


def sample_user_vectors(duckdb, paths, n: int, salt: str):
    """(n, d) champion user vectors of a sample of known users: real queries for index tuning."""
    with duckdb.get_connection() as con:
        cur = current_model(con, paths)
        return user_vectors_of(con, cur.model, sample_users(con, n, salt))


def load_recommender(duckdb, paths, users=None) -> Recommender:
    """The checkpoint and index, checked to match (a dg.Failure if not); `users` limits the load."""
    with duckdb.get_connection() as con:
        try:
            return Recommender(con, paths.artifacts, users=users)
        except ServingError as e:
            raise dg.Failure(str(e)) from e
