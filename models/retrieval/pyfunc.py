"""The two-tower as an MLflow pyfunc model: what `mlflow.pyfunc.load_model(
"models:/towerflow-two-tower@champion")` and `mlflow models serve` answer.

A logged model is self-contained: the checkpoint, the catalog's features as tensors, every
catalog item's vector, and the user histories with the popularity fallback in the published
user_histories format (models/retrieval/histories.py: the same two SQL files), written by
`write_bundle` from the warehouse at training time (the warehouse is not needed to load or serve
it). Input: a DataFrame with `user_id` (string) and optionally `recent_items` (list of item ids,
latest last); param `k` (default 10). Output: one row per recommendation: user_id, rank,
item_id, score, fallback.

The answers are the retrieval rule's (`Retriever`, models/retrieval/inference.py), the one the
HTTP service and the CLI answer by: a known user from their history with `recent_items`
appended, an unknown user with `recent_items` from those items alone (a session), anyone else
the most popular items (`fallback` true); seen and recent items excluded; recent items the
catalog does not hold ignored. Search is exact (one matmul over all item vectors, `ExactIndex`),
which is what a pyfunc answering a few users needs and equals the index's answer while the index
is exact (Flat: up to 100k items); the FAISS index and `towerflow serve` are the path for traffic.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.artifacts import USER_HISTORIES  # the bundle carries that artifact under its own name

BUNDLE_FILES = (
    "checkpoint/config.json",
    "checkpoint/model.pt",
    "catalog.pt",
    "items.parquet",
    "item_vectors.npy",
    "user_histories/manifest.json",  # + the folder it names: users.parquet, popular.parquet
)


def write_bundle(con, model, checkpoint: Path, out: Path, log=None) -> Path:
    """Everything the pyfunc needs, from the warehouse and the checkpoint, into folder `out`."""
    import shutil

    from models.retrieval.data import load_catalog
    from models.retrieval.histories import write_user_histories
    from models.retrieval.inference import embed_items

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
    pd.DataFrame({"item_id": catalog.item_ids.astype(str)}).to_parquet(out / "items.parquet")
    np.save(out / "item_vectors.npy", embed_items(model, catalog, log=log))
    write_user_histories(con, out / USER_HISTORIES, keep=0)
    return out


class TwoTowerModel:
    """The loaded bundle as a Retriever (`core`); `TwoTowerPyfunc` wraps it for MLflow."""

    def __init__(self, bundle: Path):
        from models.retrieval.checkpoint import load_checkpoint
        from models.retrieval.data import Catalog
        from models.retrieval.histories import UserHistories
        from models.retrieval.inference import ExactIndex, Retriever

        bundle = Path(bundle)
        self.model, self.meta, _ = load_checkpoint(bundle / "checkpoint")
        cat = torch.load(bundle / "catalog.pt", weights_only=True)
        items = pd.read_parquet(bundle / "items.parquet")["item_id"].to_numpy(object)
        self.catalog = Catalog(items, **cat)
        index = ExactIndex(np.load(bundle / "item_vectors.npy"), items)
        self.core = Retriever(self.model, self.catalog, index, UserHistories.read(bundle / USER_HISTORIES))

    def recommend(self, user_ids: list[str], recent: list[list[str] | None] | None = None, k: int = 10) -> pd.DataFrame:
        from models.retrieval.inference import answer_rows

        recent = recent if recent is not None else [None] * len(user_ids)
        answers = self.core.answer(
            [{"user_id": u, "k": k, "recent_items": list(r) if r is not None else []} for u, r in zip(user_ids, recent)]
        )
        rows = answer_rows(answers)
        return pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "score", "fallback"]).astype(
            {"rank": "int64", "score": "float64", "fallback": "bool"}
        )


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
    tracking_uri: str,
    run_id: str,
    bundle: Path,
    example_user: str,
    example_recent: list[str],
    name: str = "model",
    step: int = 0,
) -> dict:
    """Log the bundle as a pyfunc model of run `run_id` (its Models tab shows it); returns
    {"model_uri", "model_id", "run_id"}. The `models` package travels as code."""
    import importlib.metadata as md

    import mlflow

    import models

    sig, example = signature_and_example(example_user, example_recent)
    reqs = [f"{p}=={md.version(p)}" for p in ("mlflow", "numpy", "pandas", "polars", "pyarrow")]
    reqs.append(f"torch=={torch.__version__.split('+')[0]}")
    # MLflow warns that a Python object is pickled (cloudpickle) rather than logged as code; this
    # class is ours, shipped with `models` as code_paths, so the warning says nothing to the user
    quiet = logging.getLogger("mlflow.pyfunc")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with using_tracking_uri(tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=TwoTowerPyfunc(),
                artifacts={"bundle": str(bundle)},
                signature=sig,
                input_example=(example, {"k": 10}),
                code_paths=[str(Path(models.__file__).parent)],
                pip_requirements=reqs,
                step=step,  # MLflow links the run's metrics of this step to the model
            )
    finally:
        quiet.setLevel(level)
    return {"model_uri": info.model_uri, "model_id": info.model_id, "run_id": run_id}


def read_logged(checkpoint: Path) -> dict | None:
    """The logged model recorded beside a checkpoint (mlflow.json), or None."""
    path = checkpoint / "mlflow.json"
    return json.loads(path.read_text()) if path.exists() else None
