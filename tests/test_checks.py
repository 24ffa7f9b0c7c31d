"""The Great Expectations check shape (assets/reporting.expectations_check) through a real
Dagster materialization: real DuckDB file, real MLflow store, the real check definition."""

from __future__ import annotations

import dagster as dg

from assets.splits.checks import interaction_splits_expectations
from orchestration.resources import build_resources


def test_a_failed_expectation_is_counted_and_tabled_with_its_unexpected_rows(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    resources = build_resources(tmp_path)

    @dg.asset(name="interaction_splits")
    def splits_with_two_faults(duckdb: dg.ResourceParam) -> None:
        # u1/i1 twice (one row per (user, item) is expected) and a split label nobody knows;
        # u2 has two valid pairs, the extra figure the splits check reads on the same connection
        with duckdb.get_connection() as con:
            con.execute(
                """CREATE TABLE interaction_splits AS SELECT * FROM (VALUES
                   ('u1', 'i1', TIMESTAMP '2024-01-01', 'train'),
                   ('u1', 'i1', TIMESTAMP '2024-01-02', 'train'),
                   ('u2', 'i2', TIMESTAMP '2024-01-03', 'valid'),
                   ('u2', 'i3', TIMESTAMP '2024-01-04', 'valid'),
                   ('u3', 'i2', TIMESTAMP '2024-01-05', 'holdout')) AS t(user_id, item_id, ts, split)"""
            )

    res = dg.materialize(
        [splits_with_two_faults, interaction_splits_expectations], resources=resources, raise_on_error=False
    )
    [evaluation] = res.get_asset_check_evaluations()
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert evaluation.passed is False
    assert (meta["expectations"], meta["failed_expectations"], meta["threshold_failed"]) == (5, 2, 0)
    assert (meta["rows_validated"], meta["rows_total"], meta["sampled"]) == (5, 5, False)
    assert meta["max_eval_pairs_per_user_split"] == 2
    rows = {line.split("|")[1].strip(): line for line in meta["expectations_table"].splitlines()[2:]}
    # the duplicated pair is 2 unexpected rows, the unknown label 1
    assert "| False | 2 |" in rows["expect_compound_columns_to_be_unique"]
    assert "| False | 1 |" in rows["expect_column_values_to_be_in_set"]
    assert "| True | 0 |" in rows["expect_column_values_to_not_be_null"]
