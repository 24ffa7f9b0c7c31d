"""The two-tower as an MLflow pyfunc model: what `mlflow.pyfunc.load_model(
"models:/towerflow-two-tower@champion")` and `mlflow models serve` answer.

A logged model is self-contained: the checkpoint, the catalog's features as tensors, every
catalog item's vector, and each known user's history and seen items, written by `write_bundle`
from the warehouse at training time (the warehouse is not needed to load or serve it). Input:
a DataFrame with `user_id` (string) and optionally `recent_items` (list of item ids, latest last);
param `k` (default 10). Output: one row per recommendation: user_id, rank, item_id, score,
fallback.

- A known user is scored from their stored history, with `recent_items` appended (the latest
  `history_len` kept); everything they interacted with, and the recent items, are excluded.
- An unknown user with `recent_items` gets a real user-tower vector from those items (session
  recommendations; the user id part is left as padding, as in the HTTP service); with neither,
  the most popular items, `fallback` true.
- Recent items the catalog does not hold are ignored (they have no features to embed).

Scoring is exact (one matmul over all item vectors), which is what a pyfunc answering a few
users needs; the FAISS index and `towerflow serve` are the path for traffic.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

BUNDLE_FILES = (
    "checkpoint/config.json",
    "checkpoint/model.pt",
    "catalog.pt",
    "items.parquet",
    "users.parquet",
    "users.pt",
    "item_vectors.npy",
)
POPULAR = 1000  # popularity fallback: this many items, by train + valid + test positives


def write_bundle(con, model, checkpoint: Path, out: Path, log=None) -> Path:
    """Everything the pyfunc needs, from the warehouse and the checkpoint, into folder `out`."""
    import shutil

    from models.retrieval.data import load_catalog, load_serving_users
    from models.serving.recommender import embed_items

    t = model.cfg
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint").mkdir(exist_ok=True)
    for name in ("config.json", "model.pt"):
        shutil.copy2(checkpoint / name, out / "checkpoint" / name)
    catalog, _, _ = load_catalog(con, n_hashes=t.n_hashes, item_buckets=t.item_buckets)
    torch.save(
        {
            "id_hash": catalog.id_hash,
            "categories": catalog.categories,
            "tokens": catalog.tokens,
            "numeric": catalog.numeric,
        },
        out / "catalog.pt",
    )
    counts = con.execute("SELECT item_id, count(*) AS n FROM interaction_splits GROUP BY 1").df()
    n = np.zeros(len(catalog), np.int64)
    pos = catalog.index_of(counts["item_id"])
    n[pos[pos >= 0]] = counts["n"].to_numpy()[pos >= 0]
    pd.DataFrame({"item_id": catalog.item_ids.astype(str), "positives": n}).to_parquet(out / "items.parquet")
    np.save(out / "item_vectors.npy", embed_items(model, catalog, log=log))
    users = load_serving_users(
        con, catalog, history_len=t.history_len, n_hashes=t.n_hashes, user_buckets=t.user_buckets
    )
    pd.DataFrame({"user_id": users.user_keys.astype(str)}).to_parquet(out / "users.parquet")
    torch.save(
        {
            "history": users.history,
            "seen_rows": torch.as_tensor(users.seen_rows),
            "seen_items": torch.as_tensor(users.seen_items),
        },
        out / "users.pt",
    )
    return out


class TwoTowerModel:
    """The loaded bundle and the scoring; `TwoTowerPyfunc` wraps it for MLflow."""

    def __init__(self, bundle: Path):
        from models.retrieval.checkpoint import load_checkpoint
        from models.retrieval.data import Catalog

        self.model, self.meta, _ = load_checkpoint(bundle / "checkpoint")
        cat = torch.load(bundle / "catalog.pt", weights_only=True)
        items = pd.read_parquet(bundle / "items.parquet")
        self.catalog = Catalog(items["item_id"].to_numpy(object), **cat)
        self.vectors = torch.from_numpy(np.load(bundle / "item_vectors.npy"))
        self.popular = np.argsort(-items["positives"].to_numpy(), kind="stable")[:POPULAR]
        self.popular_counts = items["positives"].to_numpy()[self.popular]
        users = pd.read_parquet(bundle / "users.parquet")["user_id"]
        self.user_row = pd.Index(users.to_numpy(object))
        u = torch.load(bundle / "users.pt", weights_only=True)
        self.history = u["history"]
        rows, seen = u["seen_rows"].numpy(), u["seen_items"].numpy()
        bounds = np.searchsorted(rows, np.arange(len(users) + 1))
        self._seen = (seen, bounds)

    def seen_of(self, row: int) -> np.ndarray:
        seen, bounds = self._seen
        return seen[bounds[row] : bounds[row + 1]]

    def recommend(self, user_ids: list[str], recent: list[list[str] | None] | None = None, k: int = 10) -> pd.DataFrame:
        from models.retrieval.data import hash_buckets

        t = self.model.cfg
        L = t.history_len
        recent = recent if recent is not None else [None] * len(user_ids)
        rows = self.user_row.get_indexer(pd.Series(user_ids, dtype=object))
        hist = torch.full((len(user_ids), L), -1, dtype=torch.long)
        exclude, scored = [], []
        for q, (row, items) in enumerate(zip(rows, recent)):
            extra = self.catalog.index_of(list(items)) if items is not None and len(items) else np.array([], int)
            extra = extra[extra >= 0]
            base = self.history[row][self.history[row] >= 0].numpy() if row >= 0 else np.array([], int)
            h = np.concatenate([base, extra])[-L:]
            if len(h):
                hist[q, L - len(h) :] = torch.as_tensor(h)
                scored.append(q)
            exclude.append(np.concatenate([self.seen_of(row) if row >= 0 else np.array([], int), extra]))
        out = []
        if scored:
            idx = torch.as_tensor(scored)
            user_hash = torch.as_tensor(hash_buckets([user_ids[q] for q in scored], t.n_hashes, t.user_buckets))
            # an unknown user's hashed id would land in some trained user's bucket: padding instead, so
            # the session's items speak alone (the HTTP service's rule, models/serving/snapshot.py)
            user_hash[torch.as_tensor(rows[scored] < 0)] = 0
            with torch.no_grad():
                U = self.model.users(self.catalog, user_hash, hist[idx])
                S = U @ self.vectors.T
            for j, q in enumerate(scored):
                S[j, torch.as_tensor(exclude[q], dtype=torch.long)] = -torch.inf
            top = torch.topk(S, min(k, S.shape[1]), dim=1)
            for j, q in enumerate(scored):
                for r, (s, i) in enumerate(zip(top.values[j].tolist(), top.indices[j].tolist())):
                    if s > -np.inf:
                        out.append((user_ids[q], r + 1, self.catalog.item_ids[i], float(s), False))
        for q in sorted(set(range(len(user_ids))) - set(scored)):
            skip = set(exclude[q].tolist())
            pop = [(i, c) for i, c in zip(self.popular, self.popular_counts) if i not in skip][:k]
            out += [(user_ids[q], r + 1, self.catalog.item_ids[i], float(c), True) for r, (i, c) in enumerate(pop)]
        order = {q: n for n, q in enumerate(user_ids)}
        df = pd.DataFrame(out, columns=["user_id", "rank", "item_id", "score", "fallback"])
        return df.sort_values(
            ["user_id", "rank"], key=lambda c: c.map(order) if c.name == "user_id" else c, kind="stable"
        ).reset_index(drop=True)


try:
    from mlflow.pyfunc import PythonModel
except ImportError:  # pragma: no cover - mlflow is a dependency; keeps the module importable alone
    PythonModel = object


class TwoTowerPyfunc(PythonModel):
    """mlflow.pyfunc wrapper: artifacts {"bundle": folder written by write_bundle}."""

    def load_context(self, context) -> None:
        self.impl = TwoTowerModel(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        if not isinstance(model_input, pd.DataFrame) or "user_id" not in model_input.columns:
            raise ValueError("input must be a DataFrame with a user_id column (and optionally recent_items)")
        k = int((params or {}).get("k", 10))
        if not 1 <= k <= 1000:
            raise ValueError(f"param k must be in 1..1000, got {k}")
        recent = None
        if "recent_items" in model_input.columns:
            recent = [
                None if v is None or (isinstance(v, float) and np.isnan(v)) else [str(x) for x in v]
                for v in model_input["recent_items"]
            ]
        return self.impl.recommend([str(u) for u in model_input["user_id"]], recent, k)


def signature_and_example(user_id: str, recent: list[str]):
    """The model signature (user_id, optional recent_items; param k) and an input example."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import Array

    inputs = Schema(
        [ColSpec(DataType.string, "user_id"), ColSpec(Array(DataType.string), "recent_items", required=False)]
    )
    outputs = Schema(
        [
            ColSpec(DataType.string, "user_id"),
            ColSpec(DataType.long, "rank"),
            ColSpec(DataType.string, "item_id"),
            ColSpec(DataType.double, "score"),
            ColSpec(DataType.boolean, "fallback"),
        ]
    )
    sig = ModelSignature(inputs=inputs, outputs=outputs, params=ParamSchema([ParamSpec("k", DataType.long, 10)]))
    example = pd.DataFrame({"user_id": [user_id], "recent_items": [recent]})
    return sig, example


@contextmanager
def using_tracking_uri(uri: str):
    """MLflow's fluent API at `uri` for the block only: mlflow.set_tracking_uri also sets the
    MLFLOW_TRACKING_URI environment variable, which would otherwise leak into every later
    resource built in this process (another home's runs into this home's store)."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)


def log_pyfunc(
    tracking_uri: str, run_id: str, bundle: Path, example_user: str, example_recent: list[str], name: str = "model"
) -> dict:
    """Log the bundle as a pyfunc model of run `run_id` (its Models tab shows it); returns
    {"model_uri", "model_id", "run_id"}. The `models` package travels as code."""
    import importlib.metadata as md

    import mlflow

    import models

    sig, example = signature_and_example(example_user, example_recent)
    reqs = [f"{p}=={md.version(p)}" for p in ("mlflow", "numpy", "pandas", "polars", "pyarrow")]
    reqs.append(f"torch=={torch.__version__.split('+')[0]}")
    with using_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=TwoTowerPyfunc(),
            artifacts={"bundle": str(bundle)},
            signature=sig,
            input_example=(example, {"k": 10}),
            code_paths=[str(Path(models.__file__).parent)],
            pip_requirements=reqs,
        )
    return {"model_uri": info.model_uri, "model_id": info.model_id, "run_id": run_id}


def read_logged(checkpoint: Path) -> dict | None:
    """The logged model recorded beside a checkpoint (mlflow.json), or None."""
    path = checkpoint / "mlflow.json"
    return json.loads(path.read_text()) if path.exists() else None
