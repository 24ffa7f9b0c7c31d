"""Load and run the one-statement-per-relation files in sql/ (no Dagster here)."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

import duckdb

# The top-level sql/ folder is the `sql` package: package data in a wheel, the folder itself in a
# checkout, found the same way in both.
SQL_DIR = files("sql")


@cache
def sql_text(name: str) -> str:
    """The text of sql/<name>.sql; a missing file names the folder it looked in."""
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"no SQL file {name}.sql in {SQL_DIR}")
    return path.read_text()


def run_sql(con: duckdb.DuckDBPyConnection, name: str, params: dict | None = None) -> str:
    """Execute sql/<name>.sql with bound parameters; returns the query text for metadata."""
    text = sql_text(name)
    used = {k: v for k, v in (params or {}).items() if f"${k}" in text}
    con.execute(text, used) if used else con.execute(text)
    return text


def query(con: duckdb.DuckDBPyConnection, name: str, params: dict | None = None) -> list[tuple]:
    """Run a SELECT from sql/<name>.sql and return all rows (drained, as duckdb 2.0 requires)."""
    text = sql_text(name)
    used = {k: v for k, v in (params or {}).items() if f"${k}" in text}
    return (con.execute(text, used) if used else con.execute(text)).fetchall()


def column_notes(name: str) -> dict[str, str]:
    """{column: its note} from the end-of-line comments of sql/<name>.sql, where a column's
    line says what it holds: `line BIGINT NOT NULL, -- physical line ...` (a definition),
    `f.path AS source_file, -- where ...` (an alias), `v.ts, -- UTC` (a column kept as is).
    Empty when there is no such file; a comment on any other line is not a column's."""
    if not (SQL_DIR / f"{name}.sql").is_file():
        return {}
    notes = {}
    for line in sql_text(name).splitlines():
        code, sep, note = line.partition("--")
        code = code.strip().rstrip(",").strip()
        if not sep or not code or not note.strip():
            continue
        alias = re.search(r"\bAS\s+(\w+)$", code, re.IGNORECASE)
        first = re.match(r"^(?:\w+\.)?(\w+)\b", code)
        column = alias.group(1) if alias else first.group(1) if first else None
        if column:
            notes.setdefault(column, note.strip())
    return notes
