"""The promoted ranker as a library, for the CLI, batch assets and the HTTP service.

    from models.ranking.ranker import load_ranker
    ranker = load_ranker(artifacts)          # None when no ranker has been promoted yet
    result = ranker.rank("u0042",
                         history_items=["i0007", "i0311"],          # oldest first, latest last
                         history_actions=[["click"], ["like", "share"]],  # action names (or int masks)
                         candidate_ids=["i0100", "i0200", "i0300"],
                         retrieval_scores=[0.9, 0.8, 0.7])  # the retriever's scores: an input
    result.item_ids        # the candidates, best first
    result.score           # Phoenix weighted score, same order
    result.probabilities   # (C, A) P(action), same order; result.actions names the columns

A candidate's numbers depend only on the user, the history and itself (candidate isolation),
never on the other candidates passed in. History beyond cfg.history_len keeps the latest.

Candidate features (models/ranking/features.py) come from the checkpoint's item snapshot
(item_features.npz: every item's popularity, trend, first event and content as of the last
event the ranker's data held), taken at that time: a served ranker never opens the warehouse.
`rank(..., last_event_t=...)` gives the user's latest event time (epoch seconds) when known;
without it the gap feature reads 0 (the user just acted, true of a session's recent items).
Scoring is pure torch on the calling thread; set torch.set_num_threads(1) for one request at
a time (200 candidates: see benchmarks/bench_ranking.py for the latency).

`rank_users` adds the warehouse: the retriever's top N (`candidates` of a Recommender, the
retrieval rule of models/retrieval/inference.py), each user's latest action history from
action_labels, then `rank`.

The promoted ranker is artifacts/ranking/manifest.json "current", written by the promoted_ranker
asset after the blocking check "ranking beats retrieval order on valid NDCG@10" passed, next to
the MLflow registry alias towerflow-ranker@champion (ranking_model writes "latest").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models import artifacts as _artifacts
from models.artifacts import Layout
from models.ranking.data import History, hashed, load_histories
from models.ranking.features import FEATURE_FILE, ItemSnapshot, features_for
from models.ranking.labels import mask_to_multihot
from models.ranking.model import Ranker, RankerConfig, score_candidates, weighted_score
from models.retrieval.data import hash_buckets


def ranker_manifest(artifacts_root: Path) -> dict:
    return _artifacts.read_manifest(Layout(artifacts_root).ranking) or {
        "current": None,
        "latest": None,
        "versions": [],
    }


@dataclass
class RankResult:
    item_ids: list[str]  # best first
    score: np.ndarray  # (C,) weighted score
    retrieval_score: np.ndarray  # (C,) as given
    probabilities: np.ndarray  # (C, A)
    actions: list[str]


class LoadedRanker:
    def __init__(self, path: Path):
        self.meta = json.loads((path / "config.json").read_text())
        self.version = self.meta["version"]
        self.cfg = RankerConfig(**self.meta["ranker"])
        self.model = Ranker(self.cfg)
        self.model.load_state_dict(torch.load(path / "ranker.pt", weights_only=True)["model"])
        self.model.eval()
        self.actions = [a["name"] for a in self.meta["actions"]]
        self.weights = torch.tensor([a["weight"] for a in self.meta["actions"]], dtype=torch.float32)
        self.offset = float(self.meta.get("negative_offset", 1e-3))
        self._item_hashes: dict[str, np.ndarray] = {}  # item id -> its buckets: hashing is most of a request
        self.snapshot = ItemSnapshot.load(path / FEATURE_FILE) if self.cfg.n_features else None

    def features(
        self, user_ids, cand_ids: np.ndarray, cand_valid: np.ndarray, retrieval_scores, history
    ) -> torch.Tensor | None:
        """(G, C, F) candidate features from the item snapshot, at the snapshot's time."""
        if self.snapshot is None:
            return None
        G = len(cand_ids)
        last_t = history.last_t if history.last_t is not None else np.full(G, np.nan)
        hist_ids = history.item_ids if history.item_ids is not None else np.full(history.valid.shape, "", dtype=object)
        valid = np.asarray(cand_valid, dtype=bool)
        return torch.as_tensor(
            features_for(
                self.snapshot,
                np.full(G, self.snapshot.t, dtype=np.int64),
                np.asarray(user_ids, dtype=object),
                cand_ids,
                valid,
                np.where(valid, np.asarray(retrieval_scores, dtype=np.float64), -np.inf),
                hist_ids,
                history.valid.numpy(),
                last_t,
            )
        )

    def item_hashes(self, ids) -> torch.Tensor:
        """(n,) item ids -> (n, n_hashes) buckets, remembered (up to 1M ids) across requests."""
        c, cache = self.cfg, self._item_hashes
        new = [i for i in dict.fromkeys(ids) if i not in cache]
        if new:
            if len(cache) + len(new) > 1_000_000:
                cache.clear()
            cache.update(zip(new, hash_buckets(np.asarray(new, dtype=object), c.n_hashes, c.item_buckets)))
        return (
            torch.as_tensor(np.stack([cache[i] for i in ids]))
            if len(ids)
            else torch.zeros(0, c.n_hashes, dtype=torch.long)
        )

    def _mask(self, acts) -> int:
        if isinstance(acts, (int, np.integer)):
            return int(acts)
        index = {a: i for i, a in enumerate(self.actions)}
        unknown = [a for a in acts if a not in index]
        if unknown:
            raise ValueError(f"unknown action(s) {unknown} in history_actions; this ranker knows {self.actions}")
        return sum(1 << index[a] for a in set(acts))

    def score(
        self,
        user_hash,
        history,
        cand_ids: np.ndarray,
        cand_valid: np.ndarray,
        retrieval_scores,
        cand_hash: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        user_ids=None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, C) candidate ids and retrieval scores -> ((G, C, A) probabilities, (G, C) weighted
        scores). `features` (G, C, F): computed by the caller (offline, as of each user's cut);
        by default from the item snapshot (serving; `user_ids` (G,) take each user's own pairs out
        of the co-occurrences, as offline)."""
        c = self.cfg
        if cand_hash is None:
            cand_hash = hashed(cand_ids, c.n_hashes, c.item_buckets, cand_valid)
        if features is None and c.n_features:
            features = self.features(
                np.full(len(cand_ids), "", dtype=object) if user_ids is None else user_ids,
                cand_ids,
                cand_valid,
                retrieval_scores,
                history,
            )
        probs = score_candidates(
            self.model,
            user_hash,
            history.item_hash,
            history.actions,
            history.valid,
            cand_hash,
            torch.as_tensor(np.asarray(retrieval_scores, dtype=np.float32)),
            features,
        )
        return probs, weighted_score(probs, self.weights, self.offset)

    def rank(
        self, user_id: str, history_items, history_actions, candidate_ids, retrieval_scores, last_event_t=None
    ) -> RankResult:
        c = self.cfg
        if len(retrieval_scores) != len(candidate_ids):
            raise ValueError(
                f"retrieval_scores has {len(retrieval_scores)} entries but candidate_ids "
                f"{len(candidate_ids)}: one retriever score per candidate"
            )
        if len(history_items) != len(history_actions):
            raise ValueError(
                f"history_items has {len(history_items)} entries but history_actions "
                f"{len(history_actions)}: one action list per history item"
            )
        H = c.history_len
        items = list(history_items)[-H:]
        masks = [self._mask(a) for a in list(history_actions)[-H:]]
        hh = torch.zeros(1, H, c.n_hashes, dtype=torch.long)
        hm = np.zeros((1, H), dtype=np.int64)
        hv = np.zeros((1, H), dtype=bool)
        hi = np.full((1, H), "", dtype=object)
        if items:
            hh[0, H - len(items) :] = self.item_hashes(items)
            hm[0, H - len(items) :], hv[0, H - len(items) :], hi[0, H - len(items) :] = masks, True, items
        history = History(
            hh,
            torch.as_tensor(mask_to_multihot(hm, len(self.actions))),
            torch.as_tensor(hv),
            hi,
            np.array([np.nan if last_event_t is None else float(last_event_t)]),
        )
        cands = np.asarray([list(candidate_ids)], dtype=object)
        uh = torch.as_tensor(hash_buckets(np.asarray([user_id], dtype=object), c.n_hashes, c.user_buckets))
        rs = np.asarray(retrieval_scores, dtype=np.float32)
        probs, score = self.score(
            uh,
            history,
            cands,
            np.ones(cands.shape, dtype=bool),
            rs[None, :],
            self.item_hashes(list(candidate_ids))[None],
            user_ids=np.array([user_id], dtype=object),
        )
        order = np.lexsort((-rs, -score[0].numpy()))  # ties: retrieval order
        return RankResult(
            [cands[0, i] for i in order],
            score[0].numpy()[order],
            rs[order],
            probs[0].numpy()[order],
            list(self.actions),
        )


def load_ranker(artifacts_root: Path) -> LoadedRanker | None:
    """The promoted ranker, or None when promoted_ranker has promoted none."""
    version = ranker_manifest(artifacts_root).get("current")
    return LoadedRanker(Layout(artifacts_root).ranking / version) if version else None


def rank_users(con, retriever, ranker: LoadedRanker, user_ids: list[str], n_candidates: int, k: int) -> pd.DataFrame:
    """Retrieve n_candidates per known user (seen items excluded: `retriever.candidates`, the
    Recommender's), rank them, keep the top k: user_id, rank, item_id, score, retrieval_score,
    p_<action>... (unknown users are left out)."""
    got = retriever.candidates(user_ids, n_candidates)
    known = got.user_ids
    cols = ["user_id", "rank", "item_id", "score", "retrieval_score", *(f"p_{a}" for a in ranker.actions)]
    if not known:
        return pd.DataFrame(columns=cols)
    D, cand, valid = got.scores, got.item_ids, got.valid
    c = ranker.cfg
    groups = pd.DataFrame({"user_id": known, "split": "serving", "cut_ts": pd.NaT})
    history = load_histories(
        con,
        groups,
        history_len=c.history_len,
        n_actions=len(ranker.actions),
        n_hashes=c.n_hashes,
        item_buckets=c.item_buckets,
    )
    uh = torch.as_tensor(hash_buckets(np.asarray(known, dtype=object), c.n_hashes, c.user_buckets))
    probs, score = ranker.score(
        uh, history, cand, valid, np.where(valid, D, 0.0), user_ids=np.asarray(known, dtype=object)
    )
    s = torch.where(torch.as_tensor(valid), score, torch.tensor(-torch.inf)).numpy()
    kk = min(k, cand.shape[1])
    order = np.argsort(-s, axis=1, kind="stable")[:, :kk]  # ties keep the retrieval order
    g = np.repeat(np.arange(len(known)), kk)
    j = order.ravel()
    keep = valid[g, j]
    g, j = g[keep], j[keep]
    r = np.tile(np.arange(1, kk + 1), len(known))[keep]
    out = {
        "user_id": np.asarray(known, dtype=object)[g],
        "rank": r.astype(np.int32),
        "item_id": cand[g, j],
        "score": s[g, j].astype(np.float32),
        "retrieval_score": D[g, j].astype(np.float32),
    }
    p = probs.numpy()
    for a, name in enumerate(ranker.actions):
        out[f"p_{name}"] = p[g, j, a].astype(np.float32)
    return pd.DataFrame(out)
