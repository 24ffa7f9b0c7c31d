"""The promoted checkpoint, and the Recommender over it, loaded the same way by every asset."""

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from models.retrieval.checkpoint import champion_version, load_checkpoint
from models.serving.recommender import Recommender, ServingError


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


def sample_users(con, n: int, salt: str = "") -> list[str]:
    """A fixed pseudo-random sample of n known users; another `salt` gives another sample."""
    return [r[0] for r in con.execute(
        "SELECT user_id FROM (SELECT DISTINCT user_id FROM interaction_splits) ORDER BY hash(user_id || $salt), user_id "
        "LIMIT $n", {"n": n, "salt": salt}).fetchall()]


def sample_user_vectors(duckdb, paths, n: int, salt: str):
    """(n, d) champion user vectors of a sample of known users: real queries for index tuning."""
    from models.retrieval.data import items_of_users, load_catalog, load_serving_users
    from models.serving.recommender import embed_users

    with duckdb.get_connection() as con:
        cur = current_model(con, paths)
        users = sample_users(con, n, salt)
        t = cur.model.cfg
        catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets,
                                     only=items_of_users(con, users))
        ev = load_serving_users(con, catalog, history_len=t.history_len, n_hashes=t.n_hashes,
                                user_buckets=t.user_buckets, only=users)
    return embed_users(cur.model, catalog, ev.user_hash, ev.history)


def load_recommender(duckdb, paths, users=None) -> Recommender:
    """The checkpoint and index, checked to match (a dg.Failure if not); `users` limits the load."""
    with duckdb.get_connection() as con:
        try:
            return Recommender(con, paths.artifacts, users=users)
        except ServingError as e:
            raise dg.Failure(str(e)) from e
