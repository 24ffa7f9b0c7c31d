"""One consistent set of serving artifacts, loaded from the artifacts folder alone (no Dagster,
no warehouse), and the batched answers computed from it.

A `Snapshot` is the champion checkpoint (`champion_version`), the item index, the item
features (item_embeddings, the catalog the index was built from) and the user histories
(`user_histories`). It is immutable once built: the service swaps whole snapshots, so a batch
that started on one finishes on it.

`load_snapshot` refuses (SnapshotError, naming the artifact) a set that does not fit together:
an index built from another model than the champion or over another embeddings table than the
published one (an update half-way: item_embeddings is written before item_index), a vocabulary
other than the checkpoint's, or a file whose sha256 is not the one its manifest records. Given
the snapshot it replaces, it reuses what did not change (the model, the index's main segment,
the catalog, the histories), so a delta-only update reads only the delta and the new part.

Why artifacts and not the warehouse: DuckDB allows one writing process, and a read-only open
fails too while a job holds the write lock, so a service that read the warehouse on start or
reload would fail whenever the sensor's or the schedule's job runs. The assets publish what
serving needs next to the index instead (models/retrieval/histories.py, item features in
models/index/embeddings.py).

The answers themselves are the retrieval rule's (`Retriever`, models/retrieval/inference.py),
the one the CLI, the batch assets and the MLflow model answer by too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from models.artifacts import Layout, file_sha256, read_manifest
from models.index.embeddings import read_catalog
from models.index.item_index import ItemIndex
from models.retrieval.checkpoint import challenger_version, champion_version, load_checkpoint
from models.retrieval.data import Catalog
from models.retrieval.histories import UserHistories
from models.retrieval.inference import Retriever


class SnapshotError(RuntimeError):
    """Artifacts that cannot be served together (the message names which and why)."""


class RequestError(ValueError):
    """A request the snapshot cannot answer: `status` (404, 409) and the request `field`."""

    def __init__(self, message: str, field: str, status: int = 404):
        super().__init__(message)
        self.field, self.status = field, status


CHAMPION, CHALLENGER = "champion", "challenger"  # the arms (registry aliases of the same names)


def arm_version(artifacts: Path, arm: str = CHAMPION) -> str | None:
    """The checkpoint an arm serves: the models manifest's mirror of its registry alias."""
    return champion_version(artifacts) if arm == CHAMPION else challenger_version(artifacts)


def arm_layout(artifacts: Path, arm: str = CHAMPION) -> Layout:
    """Where an arm's item_embeddings and index live (the challenger's below `challenger/`)."""
    return Layout(artifacts) if arm == CHAMPION else Layout(artifacts).challenger


def manifests(artifacts: Path, arm: str = CHAMPION) -> dict:
    """The manifests an arm's snapshot is built from (None where one is missing)."""
    layout, own = Layout(artifacts), arm_layout(artifacts, arm)
    return {
        "models": read_manifest(layout.models),
        "index": read_manifest(own.index),
        "embeddings": read_manifest(own.embeddings),
        "user_histories": read_manifest(layout.user_histories),
        "ranking": read_manifest(layout.ranking),
    }


def identity(artifacts: Path, found: dict | None = None, arm: str = CHAMPION) -> dict:
    """What a snapshot of the current artifacts would be made of: equal identities, same snapshot."""
    m = found or manifests(artifacts, arm)
    index, emb, hist = m["index"] or {}, m["embeddings"] or {}, m["user_histories"] or {}
    return {
        "model": arm_version(artifacts, arm),
        "index_build": index.get("build"),
        "index_delta": index.get("delta"),
        "embeddings": emb.get("sha256"),
        "user_histories": hist.get("folder"),
        "ranker": (m.get("ranking") or {}).get("current"),
    }


@dataclass(frozen=True)
class Snapshot:
    version: str  # the arm's model version
    model: torch.nn.Module
    fingerprint: str  # vocabulary fingerprint of the checkpoint
    catalog: Catalog  # item features in item_embeddings order
    index: ItemIndex
    histories: UserHistories
    core: Retriever  # the retrieval rule over the four above (models/retrieval/inference.py)
    ident: dict
    embeddings_parts: frozenset  # part files whose sha256 was checked
    ranker: object = None  # the promoted ranking stage, None while none is promoted
    loaded_at: float = field(default_factory=time.time)
    arm: str = CHAMPION  # which arm this snapshot answers for

    @property
    def index_info(self) -> dict:
        m = self.index.manifest
        return {
            "build": m.get("build"),
            "delta": m.get("delta"),
            "type": self.index.kind,
            "items": len(self.index),
            "search": m.get("search", {}).get("setting") or ("exact" if self.index.kind == "flat" else ""),
        }

    # -- answers: the retrieval rule's, in the service's form ---------------------------------

    def history_items(self, user_id: str | None) -> list[str]:
        """The user's items from user_histories, oldest first ([] for an unknown user)."""
        return self.core.history_items(user_id)

    def recommend(self, requests: list[dict]) -> list[dict]:
        """Answers for requests {user_id, k, exclude, recent_items}: one user-tower forward and
        one index search for the whole batch (`Retriever.answer`)."""
        return self.core.answer(requests)

    def similar(self, requests: list[dict]) -> list[dict | RequestError]:
        """Answers for requests {item_id, k}: the items nearest to the item's indexed vector."""
        return [
            RequestError(f"unknown item {r['item_id']!r}: not in the index", "item_id", 404) if a is None else a
            for r, a in zip(requests, self.core.similar(requests))
        ]


def load_snapshot(
    artifacts: Path,
    previous: Snapshot | None = None,
    ranker_hook=None,
    arm: str = CHAMPION,
    champion: Snapshot | None = None,
) -> Snapshot:
    """A consistent snapshot of an arm's artifacts, reusing what `previous` already holds.

    The challenger (`arm="challenger"`) is checked as the champion is, against its own
    embeddings and index (`challenger/`), and against the `champion` it is served beside: the
    same vocabulary (the user histories and the feedback both arms' answers produce are keyed
    by it), so a challenger from another vocabulary is refused."""
    artifacts = Path(artifacts)
    layout = arm_layout(artifacts, arm)
    found = manifests(artifacts, arm)
    ident = identity(artifacts, found, arm)
    version = ident["model"]
    if not version:
        raise SnapshotError(
            "no promoted model yet: run `make demo` (or materialize the graph)"
            if arm == CHAMPION
            else "no challenger: `towerflow promote --alias challenger VERSION` names one"
        )
    for name, what, where in (
        ("index", "item_index", layout.index),
        ("embeddings", "item_embeddings", layout.embeddings),
        ("user_histories", "user_histories", Layout(artifacts).user_histories),
    ):
        if found[name] is None:
            fix = f"materialize {what}" if arm == CHAMPION else "towerflow promote --alias challenger builds it"
            raise SnapshotError(f"no {what} in {where}: {fix}")
    index_m, emb_m = found["index"], found["embeddings"]
    if index_m.get("model_version") != version:
        raise SnapshotError(
            f"{layout.index / 'manifest.json'}: built from model {index_m.get('model_version')}, "
            f"but the {arm} is {version} (item_index not rebuilt yet)"
        )
    if emb_m.get("model_version") != version:
        raise SnapshotError(
            f"{layout.embeddings / 'manifest.json'}: embedded with model "
            f"{emb_m.get('model_version')}, but the {arm} is {version}"
        )
    if index_m.get("embeddings_sha256") != emb_m.get("sha256"):
        raise SnapshotError(
            f"{layout.index / 'manifest.json'}: built over another item_embeddings table than "
            "the published one (an update is half-way: item_index follows item_embeddings)"
        )
    same = previous is not None
    if same and previous.version == version:
        model, fingerprint = previous.model, previous.fingerprint
    else:
        folder = Layout(artifacts).models / version
        try:
            model, meta, _ = load_checkpoint(folder)
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            raise SnapshotError(f"{folder}: cannot load the checkpoint ({e})") from e
        fingerprint = meta["vocabulary_fingerprint"]
    if champion is not None and fingerprint != champion.fingerprint:
        raise SnapshotError(
            f"the {arm} {version} was trained under vocabulary {fingerprint[:12]}, the champion "
            f"{champion.version} under {champion.fingerprint[:12]}: arms must share one vocabulary"
        )
    if index_m.get("vocabulary_fingerprint") != fingerprint:
        raise SnapshotError(
            f"{layout.index / 'manifest.json'}: built under another vocabulary than the checkpoint {version}'s"
        )
    # item features: reuse when the table is the same; verify the parts not verified before
    parts_checked = previous.embeddings_parts if same else frozenset()
    for p in emb_m["parts"]:
        if p["file"] not in parts_checked:
            path = layout.embeddings / "items" / p["file"]
            try:
                got = file_sha256(path)
            except OSError as e:
                raise SnapshotError(f"{path}: listed by the manifest but unreadable ({e})") from e
            if got != p["sha256"]:
                raise SnapshotError(
                    f"{path}: sha256 {got[:12]} does not match the manifest's {p['sha256'][:12]} "
                    "(damaged or half-written)"
                )
    try:
        if same and previous.ident["embeddings"] == ident["embeddings"]:
            catalog = previous.catalog
        else:
            catalog, _ = read_catalog(layout.embeddings)
        index = ItemIndex.load(layout.index, manifest=index_m, verify=True, reuse=previous.index if same else None)
        histories = (
            previous.histories
            if same and previous.ident["user_histories"] == ident["user_histories"]
            else UserHistories.read(Layout(artifacts).user_histories, found["user_histories"])
        )
    except (OSError, ValueError, KeyError) as e:
        raise SnapshotError(str(e)) from e
    if len(index) != len(catalog):
        raise SnapshotError(f"the index holds {len(index):,} live items but item_embeddings {len(catalog):,}")
    pair_pos = (
        previous.core.pair_pos if same and previous.catalog is catalog and previous.histories is histories else None
    )
    user_hash = (
        previous.core.user_hash if same and previous.model is model and previous.histories is histories else None
    )
    user_cache = (  # known users' vectors depend on these three alone: any other reload starts empty
        previous.core.user_cache
        if same and previous.model is model and previous.catalog is catalog and previous.histories is histories
        else None
    )
    core = Retriever(model, catalog, index, histories, pair_pos=pair_pos, user_hash=user_hash, user_cache=user_cache)
    if (core.row_of_pos < 0).any():
        missing = catalog.item_ids[np.flatnonzero(core.row_of_pos < 0)[0]]
        raise SnapshotError(f"item {missing!r} of item_embeddings is not in the index")
    # every known user's vector before the snapshot serves (batched: ~3 s for 49k users on one
    # loaded core), so no request of a known user without recent items runs the user tower
    core.warm_user_vectors()
    return Snapshot(
        version=version,
        model=model,
        fingerprint=fingerprint,
        catalog=catalog,
        index=index,
        histories=histories,
        core=core,
        ident=ident,
        embeddings_parts=frozenset(p["file"] for p in emb_m["parts"]),
        ranker=ranker_hook(artifacts) if ranker_hook else None,
        arm=arm,
    )
