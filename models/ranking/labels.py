"""The action vocabulary of the ranker and the action labels built from the clean events.

An action is a named event the ranker predicts: an event fires it when its type is one of the
action's event types and its value lies in [min_value, max_value] (None = unbounded). Each
action carries the weight it gets in the ranking score (negative for negative feedback, as in
Phoenix's weighted scorer). Two vocabularies ship:

- ``EVENT_ACTIONS`` (event logs such as the synthetic data): click, like, share, a rating of
  4 or more (``liked_rating``) and ``not_interested`` (negative).
- ``RATING_ACTIONS`` (MovieLens, where every event is a rating): ``rated``, ``rated_4plus``,
  ``rated_5`` and ``rated_low`` (2 or less, negative).

``sql/action_labels.sql`` turns the clean events into one row per (user, item, time) exposure
with an ``action_mask`` (bit a = action a); an impression with no action is an all-zero row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.sql import run_sql


@dataclass(frozen=True)
class Action:
    name: str
    event_types: tuple[str, ...]
    weight: float  # its weight in the ranking score; negative for negative feedback
    min_value: float | None = None
    max_value: float | None = None


EVENT_ACTIONS = (
    Action("click", ("click",), 1.0),
    Action("like", ("like",), 2.0),
    Action("share", ("share",), 3.0),
    Action("liked_rating", ("rating",), 2.0, min_value=4.0),
    # rare and costly: weighted like Phoenix's not_interested against its favourite (-43 vs 0.5),
    # scaled down because our positive actions are far less rare than a favourite
    Action("not_interested", ("not_interested", "dislike"), -10.0),
)
RATING_ACTIONS = (
    Action("rated", ("rating",), 1.0),
    Action("rated_4plus", ("rating",), 2.0, min_value=4.0),
    Action("rated_5", ("rating",), 2.0, min_value=5.0),
    Action("rated_low", ("rating",), -4.0, max_value=2.0),
)
ACTION_SETS = {"events": EVENT_ACTIONS, "ratings": RATING_ACTIONS}


def resolve_actions(con, action_set: str = "auto", weights: dict[str, float] | None = None) -> tuple[Action, ...]:
    """The vocabulary named `action_set` ("auto": ratings when every clean event is a rating,
    events otherwise), with any weight overridden by `weights` (action name -> weight)."""
    if action_set == "auto":
        types = [r[0] for r in con.execute("SELECT DISTINCT event_type FROM clean_interactions").fetchall()]
        action_set = "ratings" if types == ["rating"] else "events"
    if action_set not in ACTION_SETS:
        raise ValueError(f"ranking action_set must be auto, {' or '.join(ACTION_SETS)}; got {action_set!r}")
    actions = ACTION_SETS[action_set]
    unknown = sorted(set(weights or {}) - {a.name for a in actions})
    if unknown:
        raise ValueError(
            f"ranking action_weights: unknown action(s) {unknown}; the {action_set!r} "
            f"vocabulary has {[a.name for a in actions]}"
        )
    return tuple(
        Action(a.name, a.event_types, float((weights or {}).get(a.name, a.weight)), a.min_value, a.max_value)
        for a in actions
    )


def label_params(actions) -> dict:
    """The vocabulary as the parallel lists sql/action_labels.sql binds (one entry per event type)."""
    rows = [(i, t, a.min_value, a.max_value) for i, a in enumerate(actions) for t in a.event_types]
    return {
        "action_idx": [r[0] for r in rows],
        "event_types": [r[1] for r in rows],
        "min_values": [r[2] for r in rows],
        "max_values": [r[3] for r in rows],
    }


def describe(a: Action) -> str:
    rng = (
        ""
        if a.min_value is None and a.max_value is None
        else f" value in [{'' if a.min_value is None else a.min_value}, {'' if a.max_value is None else a.max_value}]"
    )
    return "|".join(a.event_types) + rng


def build_action_labels(con, actions) -> str:
    """Create the action_vocabulary and action_labels tables; returns the labels' SQL text."""
    if not 1 <= len(actions) <= 62:
        raise ValueError(f"the action vocabulary needs 1 to 62 actions (one bit each), got {len(actions)}")
    run_sql(
        con,
        "action_vocabulary",
        {
            "idx": list(range(len(actions))),
            "names": [a.name for a in actions],
            "weights": [a.weight for a in actions],
            "definitions": [describe(a) for a in actions],
        },
    )
    return run_sql(con, "action_labels", label_params(actions))


def read_vocabulary(con) -> list[dict]:
    """The action_vocabulary table: [{"name", "weight", "definition"}] in bit order."""
    rows = con.execute("SELECT name, weight, definition FROM action_vocabulary ORDER BY idx").fetchall()
    if not rows:
        raise ValueError("action_vocabulary is empty: materialize action_labels first")
    return [{"name": n, "weight": w, "definition": d} for n, w, d in rows]


def mask_to_multihot(mask: np.ndarray, n_actions: int) -> np.ndarray:
    """(...,) int64 action masks -> (..., n_actions) float32 multi-hot vectors."""
    bits = np.int64(1) << np.arange(n_actions, dtype=np.int64)
    return ((np.asarray(mask, dtype=np.int64)[..., None] & bits) != 0).astype(np.float32)
