"""The clean group's expectation check validates the table against the rules the run cleaned it
with (recorded in the materialization), not against the library defaults."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest

from assets.clean.checks import clean_interactions_expectations
from assets.clean.clean_interactions import clean_events
from assets.ingest.raw_events import raw_events
from models.clean.rules import CleaningRules
from orchestration.resources import build_resources

# a 10-point rating scale and an event type the defaults do not know: under the defaults the
# first two rows would be quarantined (rating_out_of_range, unknown_event_type)
EVENTS = (
    "event_id,user_id,item_id,event_type,timestamp,value\n"
    "e1,u1,i1,rating,2024-01-01T00:00:00Z,8\n"
    "e2,u1,i2,bookmark,2024-01-02T00:00:00Z,\n"
    "e3,u2,i1,click,2024-01-03T00:00:00Z,\n"
)
RUN_RULES = {"rating_max": 10.0, "event_types": [*CleaningRules().event_types, "bookmark"]}


def _materialize(home, instance, asset_defs, run_config=None):
    return dg.materialize(
        [*asset_defs, clean_interactions_expectations],
        resources=build_resources(home),
        instance=instance,
        run_config=run_config,
        raise_on_error=False,
        selection=None if asset_defs else dg.AssetSelection.checks(clean_interactions_expectations),
    )


def _expectations(result) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        e for e in result.get_asset_check_evaluations() if e.check_name == "clean_interactions_expectations"
    ]
    return evaluation


@pytest.fixture
def home(tmp_path):
    (tmp_path / "landing" / "events").mkdir(parents=True)
    (tmp_path / "landing" / "events" / "a.csv").write_text(EVENTS)
    return tmp_path


def test_the_expectations_check_uses_the_rules_the_run_cleaned_with(home):
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(
        home,
        instance,
        [raw_events, clean_events],
        {"ops": {"clean_events": {"config": RUN_RULES}}},
    )
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        kept = con.execute("SELECT event_id FROM clean_interactions ORDER BY 1").fetchall()
    assert kept == [("e1",), ("e2",), ("e3",)]  # the run's rules kept the 8 rating and the bookmark
    # against the defaults (rating_max 5, no bookmark) the check failed this table
    assert _expectations(result).passed, _expectations(result).metadata
    assert result.success

    # and the recorded rules bind: a rating beyond the run's 10 fails the check run on its own
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        con.execute("UPDATE clean_interactions SET value = 12 WHERE event_id = 'e1'")
    again = _materialize(home, instance, [])
    assert not _expectations(again).passed
