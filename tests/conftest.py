from __future__ import annotations

from pathlib import Path

import duckdb
import faiss
import pytest
import torch

from models.clean.rules import CleaningRules
from models.ingest.landing import EVENTS, ITEMS, ingest_folder
from models.clean.cleaning import clean_events as run_cleaning

HEADER = "event_id,user_id,item_id,event_type,timestamp,value\n"


def pin_threads() -> None:
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def one_thread_from_the_start():
    """Every test, and every module fixture, runs with torch and FAISS on one thread. A seeded
    training is deterministic for a given thread count, but its float sums (and so the model)
    differ between thread counts: the ETEGRec test scored HR@10 0.193 on one torch thread and
    0.133 on two, same seed. Library code that sets the process's thread count (the CLI's
    Recommender, the HTTP service) would otherwise leak its setting into whichever test or module
    fixture runs next, and a learned figure would depend on test order and the machine's cores."""
    pin_threads()


@pytest.fixture(autouse=True)
def one_thread():
    yield
    pin_threads()  # undo whatever the test's library calls set, before the next module fixture


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    (tmp_path / "landing" / "events").mkdir(parents=True)
    (tmp_path / "landing" / "items").mkdir(parents=True)
    return tmp_path / "landing"


@pytest.fixture
def con(tmp_path: Path):
    c = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    yield c
    c.close()


def write(landing: Path, rel: str, data: str | bytes) -> Path:
    path = landing / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def ingest_events(con, landing: Path):
    return {r.path: r for r in ingest_folder(con, landing, EVENTS, log=lambda m: None)}


def ingest_items(con, landing: Path):
    return {r.path: r for r in ingest_folder(con, landing, ITEMS, log=lambda m: None)}


def clean_events(con, rules: CleaningRules | None = None) -> None:
    run_cleaning(con, (rules or CleaningRules()).sql_params())


def reasons(con) -> list[tuple[str, int, str]]:
    """(file, line, reason) of every quarantined row, in file/line order."""
    return con.execute("SELECT source_file, line, reason FROM quarantined_events ORDER BY source_file, line").fetchall()


def accounted(con) -> tuple[int, int]:
    """(raw rows, clean + duplicates + quarantined): equal when nothing is lost."""
    raw = con.execute("SELECT count(*) FROM raw_events").fetchall()[0][0]
    clean, dups = con.execute("SELECT count(*), coalesce(sum(duplicate_count), 0) FROM clean_interactions").fetchall()[
        0
    ]
    quarantined = con.execute("SELECT count(*) FROM quarantined_events").fetchall()[0][0]
    return raw, clean + dups + quarantined
