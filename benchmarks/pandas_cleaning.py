"""The event cleaning rules written by hand in pandas: the baseline `bench_cleaning.py` times
the DuckDB path (`models/ingest/landing.py` + `sql/*.sql`) against.

Same rules in the same order with the same reason codes as `sql/typed_events.sql`; exact
duplicates and conflicting event_ids as in `sql/event_conflicts.sql` and `sql/clean_interactions.sql`; positive / negative
flags as in `sql/clean_interactions.sql`; quarantine rows as in `sql/quarantined_events.sql`.
Vectorised pandas throughout (no per-row apply), reading with pandas' fastest readers
(`engine="pyarrow"`), so the baseline is a fair one.

Reading covers what the synthetic generator writes and a little more. Where it stops, it
says so instead of guessing (DuckDB's ingest has a line-by-line fallback for all of these):
- CSV with blank lines or quoted line breaks: raises `UnsupportedInput` (pyarrow drops or
  merges such lines, so the rows could not be accounted for). Invalid UTF-8 likewise.
- CSV `line` is the physical line only when no malformed line precedes the row (pyarrow's
  multithreaded reader does not report line numbers); order, which the rules need, is exact.
- JSONL that pyarrow cannot read (invalid JSON, blank lines, non-text values) is parsed line
  by line with `json`, the one per-row Python loop here; the generator never needs it.
Known differences from DuckDB on inputs the generator never writes: timestamp spellings
outside ISO_RE that DuckDB's cast still reads ('2024/01/01', '... UTC', zone names, 'epoch',
'infinity', '24:00:00', 5-digit years) are unparseable here; numbers with `_` separators are
numeric for DuckDB, non_numeric_value here.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Mirrors models/ingest/landing.py (EVENTS, RAW_LINE_KEEP), kept here so this process imports no DuckDB.
EVENT_COLUMNS = ("event_id", "user_id", "item_id", "event_type", "timestamp", "value")
REQUIRED = ("user_id", "item_id", "event_type", "timestamp")
RAW_LINE_KEEP = 2_000
RAW_COLUMNS = ("file_id", "source_file", "line", *EVENT_COLUMNS, "extra", "raw_line", "parse_error")
# Version identity (sql/clean_interactions.sql GROUP BY): an exact duplicate repeats all of these.
VERSION_KEYS = ["event_id", "user_id", "item_id", "event_type", "ts", "value"]
# A number at or above this is epoch milliseconds (1e11 s would be the year 5138).
EPOCH_MS_FROM = 1e11
EPOCH_RE = r"[0-9]{1,14}(\.[0-9]+)?"
# The ISO-8601 spellings DuckDB's cast and pd.to_datetime(format="ISO8601") both read the same
# way; pandas alone also takes '2024', '2024-01', '20240101T1000', '-5', so those are held out.
ISO_RE = r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?"


class UnsupportedInput(ValueError):
    """A landing file this baseline cannot account for row by row."""


@dataclass
class CleaningResult:
    raw_rows: int
    clean: pd.DataFrame  # grain of clean_interactions
    quarantined: pd.DataFrame  # grain of quarantined_events

    def counts(self) -> dict:
        reasons = self.quarantined["reason"].value_counts()
        return {
            "raw_rows": self.raw_rows,
            "clean": len(self.clean),
            "duplicates": int(self.clean["duplicate_count"].sum()),
            "positives": int(self.clean["is_positive"].sum()),
            "negatives": int(self.clean["is_negative"].sum()),
            "quarantined": len(self.quarantined),
            "reasons": {str(k): int(v) for k, v in sorted(reasons.items())},
        }


def clean_events(landing: Path, params: dict) -> CleaningResult:
    """landing/events/* -> clean interactions and quarantined rows; `params` is
    `CleaningRules().sql_params()`."""
    raw = read_events(Path(landing) / "events")
    typed = typed_events(raw, params)
    del raw
    clean, quarantined = resolve_versions(typed, params)
    return CleaningResult(len(typed), clean, quarantined)


# --- reading ------------------------------------------------------------------------------


def read_events(folder: Path) -> pd.DataFrame:
    """Every event file under `folder` -> one raw frame (RAW_COLUMNS) in file, then line order."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    frames = []
    for file_id, path in enumerate(files, start=1):
        fmt = _file_format(path)
        if fmt is None or path.stat().st_size == 0:
            continue  # DuckDB records these as rejected / empty files: no rows
        frame = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[fmt](path)
        frame.insert(0, "source_file", path.relative_to(folder.parent).as_posix())
        frame.insert(0, "file_id", file_id)
        frames.append(frame[list(RAW_COLUMNS)])
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("file_id", "line") else "str") for c in RAW_COLUMNS})
    return pd.concat(frames, ignore_index=True)


def _file_format(path: Path) -> str | None:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
        if suffixes and suffixes[-1] == ".parquet":
            return None
    if not suffixes:
        return None
    return {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}.get(
        suffixes[-1]
    )


def _header_names(first_line: str) -> list[str]:
    """Header -> column names as landing.py maps them: stripped, lower-cased, deduplicated."""
    out, seen = [], {}
    for i, raw in enumerate(next(csv.reader([first_line])) if first_line.strip() else []):
        name = raw.strip().lower() or f"column_{i + 1}"
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _to_contract(df: pd.DataFrame, names: list[str], header: bool) -> pd.DataFrame:
    """Source columns (renamed to `names`) -> contract columns as text, extras as JSON. A file
    with a header (CSV, Parquet) lacking a required column has every row quarantined."""
    df.columns = names
    out = pd.DataFrame(index=df.index)
    for c in EVENT_COLUMNS:
        out[c] = df[c].astype("str") if c in df.columns else pd.Series(np.nan, index=df.index, dtype="str")
    extras = [n for n in names if n not in EVENT_COLUMNS]
    if extras and len(df):
        # an empty CSV field is NULL, as DuckDB's reader gives it
        text = df[extras].replace("", np.nan).to_json(orient="records", lines=True, force_ascii=False)
        out["extra"] = pd.Series(text.rstrip("\n").split("\n"), index=df.index, dtype="str")
    else:
        out["extra"] = pd.Series(np.nan, index=df.index, dtype="str")
    out["raw_line"] = pd.Series(np.nan, index=df.index, dtype="str")
    missing = header and any(c not in names for c in REQUIRED)
    out["parse_error"] = pd.Series("missing_required_columns" if missing else np.nan, index=df.index, dtype="str")
    return out


def _read_csv(path: Path) -> pd.DataFrame:
    data = path.read_bytes() if path.suffix.lower() != ".gz" else gzip.decompress(path.read_bytes())
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    end = data.find(b"\n")
    first = data[: end if end >= 0 else len(data)].decode("utf-8", errors="replace")
    names = _header_names(first.lstrip("\ufeff").rstrip("\r"))
    bad = []  # (columns found, text) of each line with the wrong number of fields

    def on_bad_line(row):  # pyarrow.csv.InvalidRow
        bad.append((row.actual_columns, row.text))
        return "skip"

    try:
        df = pd.read_csv(io.BytesIO(data), engine="pyarrow", dtype=str, keep_default_na=False, on_bad_lines=on_bad_line)
    except Exception as e:  # pyarrow raises its own error types for encoding and quoting
        raise UnsupportedInput(
            f"{path}: pandas could not read this CSV ({e}); the DuckDB path "
            "reads it line by line, this baseline does not"
        ) from e
    if len(df) + len(bad) != lines - 1:
        raise UnsupportedInput(
            f"{path}: {lines - 1:,} data lines but pandas returned {len(df):,} rows and "
            f"{len(bad):,} malformed lines; blank lines and quoted line breaks are not handled "
            "by this baseline"
        )
    good = _to_contract(df, names, header=True)
    good.insert(0, "line", np.arange(2, len(df) + 2))
    errors = pd.DataFrame(
        {
            "line": pd.Series(np.full(len(bad), -1), dtype="int64"),  # unknown: see module doc
            **{c: pd.Series(np.nan, index=range(len(bad)), dtype="str") for c in (*EVENT_COLUMNS, "extra")},
            "raw_line": pd.Series([t[:RAW_LINE_KEEP] for _, t in bad], dtype="str"),
            "parse_error": pd.Series(
                ["csv_missing_columns" if n < len(names) else "csv_too_many_columns" for n, _ in bad], dtype="str"
            ),
        }
    )
    return pd.concat([good, errors], ignore_index=True) if len(bad) else good


def _read_jsonl(path: Path) -> pd.DataFrame:
    data = gzip.decompress(path.read_bytes()) if path.suffix.lower() == ".gz" else path.read_bytes()
    lines = data.count(b"\n") + (len(data) > 0 and not data.endswith(b"\n"))
    try:
        df = pd.read_json(io.BytesIO(data), lines=True, engine="pyarrow")
        ok = len(df) == lines and all(df[c].dtype == "str" for c in df.columns)
    except Exception:  # pyarrow: invalid JSON somewhere, or a key that changes type
        ok = False
    if not ok:
        return _read_jsonl_by_line(data)
    out = _to_contract(df, [str(c) for c in df.columns], header=False)  # absent key = NULL field
    out.insert(0, "line", np.arange(1, len(df) + 1))
    return out


def _read_jsonl_by_line(data: bytes) -> pd.DataFrame:
    """Line-by-line fallback: every line becomes a row, unparseable ones with their error."""
    rows = []
    for i, raw in enumerate(data.split(b"\n")[: data.count(b"\n") + (not data.endswith(b"\n"))], 1):
        text = raw.decode("utf-8", errors="backslashreplace").rstrip("\r")
        err, obj = None, None
        if not text.strip():
            err = "blank_line"
        else:
            try:
                obj = json.loads(text)
                err = None if isinstance(obj, dict) else "json_not_object"
            except ValueError:
                err = "invalid_json"
        if err:
            rows.append({"line": i, "raw_line": text[:RAW_LINE_KEEP], "parse_error": err})
            continue
        row = {c: _json_text(obj.get(c)) for c in EVENT_COLUMNS}
        extra = {k: v for k, v in obj.items() if k not in EVENT_COLUMNS}
        extra = json.dumps(extra, ensure_ascii=False, separators=(",", ":")) if extra else None
        rows.append({"line": i, **row, "extra": extra})
    df = pd.DataFrame(rows, columns=["line", *EVENT_COLUMNS, "extra", "raw_line", "parse_error"])
    for c in df.columns[1:]:
        df[c] = df[c].astype("str")
    return df


def _json_text(v) -> str | None:
    """A JSON value as DuckDB's ->> gives it: strings bare, anything else as JSON text."""
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _read_parquet(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    out = _to_contract(df, [str(c).strip().lower() for c in df.columns], header=True)
    out.insert(0, "line", np.arange(1, len(df) + 1))
    return out


# --- typing and rules (sql/typed_events.sql) ----------------------------------------------


def _text(s: pd.Series) -> pd.Series:
    """nullif(trim(s), ''): DuckDB's trim() removes spaces only, not tabs or newlines."""
    s = s.str.strip(" ")
    return s.mask(s == "")


def parse_timestamps(ts_text: pd.Series) -> np.ndarray:
    """Text -> naive UTC datetime64[us], NaT where unparseable.

    Up to 14 digits (optionally with a fraction) are epoch seconds, or milliseconds from 1e11;
    anything else is ISO-8601, an offset honoured and none meaning UTC.
    """
    out = np.full(len(ts_text), np.datetime64("NaT"), dtype="datetime64[us]")
    present = ts_text.notna().to_numpy()
    is_num = ts_text.str.fullmatch(EPOCH_RE).fillna(False).to_numpy(dtype=bool)
    num = pd.to_numeric(ts_text[is_num], errors="coerce").to_numpy(dtype="float64")
    secs = np.where(num >= EPOCH_MS_FROM, num / 1000, num)
    # DuckDB's to_timestamp(double) rounds seconds * 1e6 half to even, as np.round does
    out[is_num] = np.round(secs * 1e6).astype("int64").view("datetime64[us]")
    iso = present & ~is_num & ts_text.str.fullmatch(ISO_RE).fillna(False).to_numpy(dtype=bool)
    parsed = pd.to_datetime(ts_text[iso], utc=True, errors="coerce", format="ISO8601")
    out[iso] = parsed.dt.tz_convert(None).to_numpy(dtype="datetime64[us]")
    return out


def typed_events(raw: pd.DataFrame, p: dict) -> pd.DataFrame:
    """One row per raw row: trimmed, typed fields and the first rule broken in `reason`."""
    t = pd.DataFrame(
        {
            "file_id": raw["file_id"],
            "source_file": raw["source_file"],
            "line": raw["line"],
            # ingest order: file first, then line (rows are already in that order)
            "pos": raw["file_id"].astype("int64") * 10_000_000_000 + np.arange(len(raw)),
            "event_id": _text(raw["event_id"]),
            "user_id": _text(raw["user_id"]),
            "item_id": _text(raw["item_id"]),
            "event_type": _text(raw["event_type"].str.lower()),
            "timestamp_raw": raw["timestamp"],
            "value_raw": raw["value"],
            "raw_line": raw["raw_line"],
            "extra": raw["extra"],
        }
    )
    ts_text = _text(raw["timestamp"])
    value_text = _text(raw["value"])
    t["ts"] = parse_timestamps(ts_text)
    t["value"] = pd.to_numeric(value_text, errors="coerce").astype("float64")

    value = t["value"]
    n_max = p["max_id_length"]
    ctrl = r"[\x00-\x1e\x7f]"  # as the SQL: \x1f is its field separator, so it is not tested
    is_rating = t["event_type"].isin(p["rating_types"])
    ts = t["ts"]
    rules = [  # (condition, reason), first match wins, as the CASE in typed_events.sql
        (raw["parse_error"].notna(), None),
        (t["user_id"].isna(), "missing_user_id"),
        (t["item_id"].isna(), "missing_item_id"),
        (
            (t["user_id"].str.len() > n_max) | (t["item_id"].str.len() > n_max) | (t["event_id"].str.len() > n_max),
            "oversized_id",
        ),
        (
            t["user_id"].str.contains(ctrl, na=False)
            | t["item_id"].str.contains(ctrl, na=False)
            | t["event_id"].str.contains(ctrl, na=False),
            "control_character_in_id",
        ),
        (t["event_type"].isna(), "missing_event_type"),
        (~t["event_type"].isin(p["event_types"]), "unknown_event_type"),
        (ts_text.isna(), "missing_timestamp"),
        (ts.isna(), "unparseable_timestamp"),
        ((ts < pd.Timestamp(p["min_timestamp"])) | (ts > pd.Timestamp(p["max_timestamp"])), "implausible_timestamp"),
        (value_text.notna() & ~np.isfinite(value), "non_numeric_value"),
        (is_rating & value.isna(), "missing_rating"),
        (is_rating & ((value < p["rating_min"]) | (value > p["rating_max"])), "rating_out_of_range"),
        (value < 0, "negative_value"),
    ]
    reason = np.full(len(t), None, dtype=object)
    open_ = np.ones(len(t), dtype=bool)
    for cond, code in rules:
        hit = open_ & cond.to_numpy(dtype=bool, na_value=False)
        reason[hit] = raw["parse_error"].to_numpy(dtype=object)[hit] if code is None else code
        open_ &= ~hit
    t["reason"] = pd.Series(reason, index=t.index, dtype="str")
    return t


# --- versions, clean rows, quarantine (event_conflicts / clean_interactions / quarantined) ---


def resolve_versions(t: pd.DataFrame, p: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collapse exact duplicates onto their first copy; for one event_id with several
    versions, the version whose first copy came first wins and every copy of the others is
    quarantined as conflicting_event_id."""
    ok = t[t["reason"].isna()]
    assert ok["pos"].is_monotonic_increasing, "rows must be in ingest order"
    # ngroup(sort=False) numbers versions in order of their first copy, i.e. by first_pos
    version = ok.groupby(VERSION_KEYS, dropna=False, sort=False).ngroup().to_numpy()
    copies = np.bincount(version)
    first = np.zeros(len(ok), dtype=bool)
    first[np.unique(version, return_index=True)[1]] = True
    versions = ok[first]
    has_id = versions["event_id"].notna()
    losing = (has_id & versions["event_id"].duplicated()).to_numpy()  # rank() > 1
    losing_copy = np.isin(version, version[first][losing])

    clean = versions[~losing].copy()
    clean["duplicate_count"] = copies[version[first][~losing]] - 1
    et, v = clean["event_type"], clean["value"]
    rating = et.isin(p["rating_types"])
    clean["is_positive"] = et.isin(p["positive_types"]) & (~rating | (v >= p["min_positive_rating"]))
    clean["is_negative"] = et.isin(p["negative_types"]) | (rating & (v < p["min_positive_rating"]))
    clean = clean[
        [
            "event_id",
            "user_id",
            "item_id",
            "event_type",
            "ts",
            "value",
            "is_positive",
            "is_negative",
            "source_file",
            "line",
            "duplicate_count",
            "extra",
        ]
    ]
    clean = clean.sort_values(["ts", "user_id", "item_id"], ignore_index=True)

    q_cols = [
        "source_file",
        "line",
        "reason",
        "event_id",
        "user_id",
        "item_id",
        "event_type",
        "timestamp_raw",
        "value_raw",
        "raw_line",
        "extra",
    ]
    conflicting = ok[losing_copy].assign(reason="conflicting_event_id")
    quarantined = pd.concat([t[t["reason"].notna()][q_cols], conflicting[q_cols]], ignore_index=True)
    quarantined = quarantined.sort_values(["source_file", "line"], ignore_index=True)
    return clean, quarantined
