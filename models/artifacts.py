"""Atomic writes, manifests and the artifact layout: the one implementation every artifact
writer uses, and the one place that names the folders under artifacts/ (`Layout`).

A reader never sees half a file or half a folder: content goes to a hidden temp path in the
same folder, is fsynced, and is renamed into place (a folder's parent is fsynced too). A
manifest is a JSON file named `manifest.json` in the folder it describes, replaced last, so
the folders it names are whole before anyone can find them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

MANIFEST = "manifest.json"

# The folders under TOWERFLOW_HOME/artifacts/, one per artifact; what is inside each belongs to
# the module that writes it (named beside each).
ARTIFACTS = "artifacts"
MODELS = "models"  # two-tower checkpoints; manifest "current" = the champion (retrieval/checkpoint.py)
EMBEDDINGS = "embeddings"  # the item_embeddings table (index/embeddings.py)
INDEX = "index"  # FAISS main + delta segments, tombstones (index/item_index.py)
USER_HISTORIES = "user_histories"  # histories + popularity for serving (serving/histories.py)
RECOMMENDATIONS = "recommendations"  # batch and ranked top-k Parquet files (their assets)
RANKING = "ranking"  # ranker checkpoints; manifest "current" = the promoted ranker (ranking/training.py)
SEMANTIC_IDS = "semantic_ids"  # tokenizers + item codes (generative/store.py)
GENERATIVE = "generative"  # generative retriever checkpoints (generative/training.py)
# the challenger's own item_embeddings and index (built for the models manifest's "challenger"
# by models/serving/arms.py), laid out below this folder as the champion's are below the root
CHALLENGER = "challenger"
ABTEST = "abtest"  # the latest A/B test report and its plot (the ab_test_report asset)
# what the HTTP service serves from, and so watches for a reload and checks for consistency
SERVED = (
    MODELS,
    INDEX,
    EMBEDDINGS,
    USER_HISTORIES,
    RANKING,
    f"{CHALLENGER}/{INDEX}",
    f"{CHALLENGER}/{EMBEDDINGS}",
)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


class AtomicWriter:
    """A file written through a hidden temp path beside it: `commit()` fsyncs it and renames it
    into place, `abort()` removes it. `fh` is an open binary handle for streaming writers
    (`handle=False` leaves the temp path to a library that writes by path)."""

    def __init__(self, path: Path, handle: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self.tmp = Path(name)
        self.fh = os.fdopen(fd, "wb") if handle else None
        if not handle:
            os.close(fd)

    def commit(self) -> None:
        if self.fh is not None:
            self.fh.close()
        _fsync_file(self.tmp)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.fh is not None:
            self.fh.close()
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yields a temp path beside `path`; on success it is fsynced and renamed to `path`, on
    error removed."""
    writer = AtomicWriter(path, handle=False)
    try:
        yield writer.tmp
        writer.commit()
    except BaseException:
        writer.abort()
        raise


@contextmanager
def atomic_folder(parent: Path, name: str) -> Iterator[Path]:
    """Yields a temp folder in `parent`; on success its files are fsynced and it is renamed to
    `parent/name` (which must not exist), on error removed."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}."))
    try:
        yield tmp
        for f in tmp.iterdir():
            _fsync_file(f)
        os.rename(tmp, parent / name)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: Path, obj: dict) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))


def read_manifest(folder: Path) -> dict | None:
    """`folder/manifest.json`, or None when the folder has none yet."""
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def write_manifest(folder: Path, manifest: dict) -> None:
    write_json_atomic(Path(folder) / MANIFEST, manifest)


def file_sha256(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@dataclass(frozen=True)
class Layout:
    """Each artifact's folder under an artifacts root: `Layout(root).index`."""

    root: Path  # the artifacts folder, TOWERFLOW_HOME/artifacts

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def models(self) -> Path:
        return self.root / MODELS

    @property
    def embeddings(self) -> Path:
        return self.root / EMBEDDINGS

    @property
    def index(self) -> Path:
        return self.root / INDEX

    @property
    def user_histories(self) -> Path:
        return self.root / USER_HISTORIES

    @property
    def recommendations(self) -> Path:
        return self.root / RECOMMENDATIONS

    @property
    def ranking(self) -> Path:
        return self.root / RANKING

    @property
    def semantic_ids(self) -> Path:
        return self.root / SEMANTIC_IDS

    @property
    def generative(self) -> Path:
        return self.root / GENERATIVE

    @property
    def challenger(self) -> Layout:
        """The challenger's folders: `Layout(root).challenger.index` is its item index."""
        return Layout(self.root / CHALLENGER)

    @property
    def abtest(self) -> Path:
        return self.root / ABTEST
