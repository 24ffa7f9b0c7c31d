"""Great Expectations 1.x, called directly (dagster-ge pins GX 0.18; see shared/STACK.md).

GX takes pandas, not DuckDB: tables up to `max_rows` are validated whole, larger ones on a
seeded reservoir sample, and the result says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from models.settings import setting


@dataclass
class GxSettings:
    max_rows: int = setting(
        200_000,
        "Great Expectations validates the whole table up to this size and a seeded "
        "sample above it; whole-table invariants are SQL audits either way.",
    )
    seed: int = setting(0, "Sample seed, so a failing sample can be reproduced.")


@cache
def _batch_definition():
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return (
        ctx.data_sources.add_pandas("towerflow")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("all")
    )


@dataclass
class GxOutcome:
    success: bool
    rows_validated: int
    rows_total: int
    sampled: bool
    results: list[tuple[str, str, bool, int | None, object]]  # (expectation, column, ok, unexpected, observed)


def load_frame(con, select: str, params: dict | None, max_rows: int, seed: int):
    """The rows of `select` as pandas: all of them up to max_rows, else a seeded sample."""
    total = con.execute(f"SELECT count(*) FROM ({select})", params or {}).fetchall()[0][0]
    if total <= max_rows:
        return con.execute(select, params or {}).df(), total, False
    sampled = f"SELECT * FROM ({select}) USING SAMPLE reservoir({int(max_rows)} ROWS) REPEATABLE ({int(seed)})"
    return con.execute(sampled, params or {}).df(), total, True


def validate(df, expectations: list, total: int | None = None, sampled: bool = False) -> GxOutcome:
    import great_expectations as gx

    suite = gx.ExpectationSuite(name="towerflow", expectations=expectations)
    res = _batch_definition().get_batch(batch_parameters={"dataframe": df}).validate(suite)
    rows = []
    for r in res.results:
        cfg = r.expectation_config
        rows.append(
            (
                cfg.type,
                str(cfg.kwargs.get("column") or cfg.kwargs.get("column_list") or ""),
                bool(r.success),
                r.result.get("unexpected_count"),
                r.result.get("observed_value"),
            )
        )
    rows.sort()
    return GxOutcome(bool(res.success), len(df), total if total is not None else len(df), sampled, rows)
