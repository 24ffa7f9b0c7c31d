"""The whole data half without Dagster, for tests and benchmarks: landing files -> raw, clean,
split and vocabulary tables, running exactly the steps the assets run. It lives beside the last
step it runs: the data half is a chain (ingest -> clean -> splits), and the root of models/ holds
only helpers that every stage may import."""

from __future__ import annotations

from models.clean.cleaning import clean_events, clean_items
from models.clean.rules import CleaningRules
from models.ingest.landing import EVENTS, ITEMS, ingest_folder
from models.splits.build import build_splits, build_vocabularies
from models.splits.rules import SplitRules, VocabularyRules


def default_warehouse_params() -> dict:
    """The data half's SQL parameters at the library defaults (the graph's defaults), as
    `build_warehouse` takes them."""
    return {
        "cleaning": CleaningRules().sql_params(),
        "splits": SplitRules().sql_params(),
        "vocabulary": VocabularyRules().sql_params(),
    }


def build_warehouse(con, landing, *, cleaning: dict, splits: dict, vocabulary: dict) -> str:
    """Every data step with the given SQL parameters (`default_warehouse_params()` gives
    the graph's defaults); returns the vocabulary fingerprint."""
    ingest_folder(con, landing, EVENTS, log=lambda m: None)
    ingest_folder(con, landing, ITEMS, log=lambda m: None)
    clean_events(con, cleaning)
    clean_items(con, cleaning)
    build_splits(con, splits)
    return build_vocabularies(con, vocabulary)[1]
