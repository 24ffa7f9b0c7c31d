"""Landing files -> raw DuckDB tables, every physical line accounted for.

No Dagster here: the `raw_events` / `raw_items` assets and `benchmarks/bench_cleaning.py`
both call `ingest_folder`.

Each landing file becomes rows of the raw table with every contract column as text, the
source file, its physical line number (the CSV header is line 1) and, for a line that could
not be parsed, the raw text and a `parse_error` code. The clean SQL turns parse errors into
quarantine rows, so a bad line is never dropped. Whole-file problems (unsupported type,
unreadable Parquet, truncated gzip) are recorded in `ingested_files` with a message that
names the file and what was wrong; the other files still load.

Paths, in order of preference:
- CSV: DuckDB's native reader with a pinned dialect and `store_rejects`. It is trusted only
  when good rows + rejected lines equal the file's physical data lines (counted here), so a
  quote that swallows the rest of a file, a blank line or a record spanning lines sends the
  file down the line-by-line path instead of losing rows.
- JSONL: DuckDB reads lines as text and parses them with its JSON functions.
- Parquet: DuckDB reads it natively, every column cast to text.
- Fallback (invalid UTF-8, truncated gzip, overlong lines, unexpected reader errors): Python
  reads the file line by line and tolerates all of these.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterator

import duckdb
import pyarrow as pa

from models.ingest.changes import FileState, discover, file_state, same_content
from models.sql import run_sql

# Lines longer than this are not parsed; they are quarantined with their first bytes kept.
MAX_LINE_BYTES = 1_000_000
# raw_line keeps this many characters of an unparseable line: enough to debug, bounded in size.
RAW_LINE_KEEP = 2_000
FALLBACK_BATCH = 100_000

SUPPORTED = {
    ".csv": "csv",
    ".tsv": None,
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


@dataclass(frozen=True)
class LandingKind:
    """One landing folder and the raw table it feeds."""

    name: str  # folder under landing/: "events" or "items"
    table: str  # raw table name
    columns: tuple[str, ...]  # contract columns, all kept as text
    required: tuple[str, ...]  # a CSV/Parquet header without these cannot yield clean rows


EVENTS = LandingKind(
    "events",
    "raw_events",
    ("event_id", "user_id", "item_id", "event_type", "timestamp", "value"),
    ("user_id", "item_id", "event_type", "timestamp"),
)
ITEMS = LandingKind("items", "raw_items", ("item_id", "title", "categories", "created_at"), ("item_id",))
KINDS = {k.name: k for k in (EVENTS, ITEMS)}


@dataclass
class FileResult:
    path: str  # relative to the landing folder
    status: str  # loaded | partial | rejected | empty | skipped
    rows: int = 0  # rows written to the raw table (parse errors included)
    parse_errors: int = 0
    reader: str = ""  # which path read it: native_csv | lines_jsonl | parquet | python_lines
    message: str = ""
    file_id: int | None = None
    extra: dict = field(default_factory=dict)


def file_format(path: Path) -> str | None:
    """csv | jsonl | parquet from the suffix (a trailing .gz allowed), else None."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
        if suffixes and suffixes[-1] == ".parquet":
            return None
    return SUPPORTED.get(suffixes[-1]) if suffixes else None


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def count_lines(path: Path) -> tuple[int, str | None]:
    """Physical lines (a last line without newline counts) and a read error, if any."""
    n, last = 0, b"\n"
    try:
        with _open_binary(path) as f:
            while chunk := f.read(1 << 24):
                n += chunk.count(b"\n")
                last = chunk[-1:]
    except (EOFError, OSError, zlib.error) as e:
        return n, f"{type(e).__name__}: {e}"
    return n + (last != b"\n"), None


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    run_sql(con, "ingested_files")
    run_sql(con, "raw_events")
    run_sql(con, "raw_items")


def ingested(con: duckdb.DuckDBPyConnection, kind: LandingKind) -> dict[str, FileState]:
    """The ledger's live record of every file of `landing/<kind>/` it has read (loaded, partial,
    rejected or empty: each is skipped while its bytes stay the same), keyed like `scan`: by
    path under the kind's folder."""
    ensure_tables(con)
    rows = con.execute(
        "SELECT path, size, sha256 FROM ingested_files WHERE kind = $k AND status <> 'superseded' ORDER BY path",
        {"k": kind.name},
    ).fetchall()
    prefix = f"{kind.name}/"
    return {p.removeprefix(prefix): FileState(size, sha) for p, size, sha in rows}


def ingest_folder(
    con: duckdb.DuckDBPyConnection,
    landing: Path,
    kind: LandingKind,
    log: Callable[[str], None] = print,
    only: Collection[str] | None = None,
) -> list[FileResult]:
    """Load every new or changed file of `landing/<kind>/` into `kind.table`, or of the files
    `only` names (paths under `landing/<kind>/`: a partitioned run's files).

    A file already ingested with the same path, size and sha256 is skipped (the one rule of
    models/ingest/changes.py). A file whose content changed replaces the rows it loaded before
    (its old record is marked superseded).
    """
    ensure_tables(con)
    con.execute(f"DELETE FROM {kind.table} WHERE file_id NOT IN (SELECT file_id FROM ingested_files)")
    folder = landing / kind.name
    paths = discover(folder)
    results = []
    if only is not None:
        landed = {p.relative_to(folder).as_posix(): p for p in paths}
        gone = sorted(set(only) - set(landed))
        # a file the ledger read is kept when it leaves the folder (as in an unpartitioned run,
        # which never sees it again); a file it never read cannot be ingested
        read_before = ingested(con, kind)
        if unknown := [f for f in gone if f not in read_before]:
            raise FileNotFoundError(
                f"{len(unknown)} file(s) asked for are neither in {folder} nor ingested before: "
                f"{', '.join(unknown[:5])}; a partition names a landed file by its path under {kind.name}/"
            )
        for f in gone:
            results.append(FileResult(f"{kind.name}/{f}", "skipped", message="gone from the folder; its rows stay"))
        paths = sorted(landed[f] for f in set(only) & set(landed))
    for path in paths:
        rel = path.relative_to(landing).as_posix()
        state = file_state(path)
        size, digest = state.size, state.sha256
        seen = con.execute(
            "SELECT file_id, size, sha256 FROM ingested_files WHERE kind = $k AND path = $p AND status <> 'superseded'",
            {"k": kind.name, "p": rel},
        ).fetchall()
        if any(same_content(state, FileState(s, h)) for _, s, h in seen):
            results.append(FileResult(rel, "skipped", message="already ingested (same size and sha256)"))
            continue
        # No explicit transaction: a reader error inside one would abort it. Rows of a file
        # without an ingested_files record (a crash mid-file) are removed on the next run.
        for old_id, _, _ in seen:
            con.execute(f"DELETE FROM {kind.table} WHERE file_id = $f", {"f": old_id})
            con.execute("UPDATE ingested_files SET status = 'superseded' WHERE file_id = $f", {"f": old_id})
        file_id = con.execute("SELECT coalesce(max(file_id), 0) + 1 FROM ingested_files").fetchall()[0][0]
        file_id = max(file_id, con.execute(f"SELECT coalesce(max(file_id), 0) + 1 FROM {kind.table}").fetchall()[0][0])
        try:
            res = _load_file(con, path, rel, file_id, kind)
        except Exception:
            con.execute(f"DELETE FROM {kind.table} WHERE file_id = $f", {"f": file_id})
            raise
        res.file_id = file_id
        con.execute(
            """INSERT INTO ingested_files VALUES ($id, $k, $p, $size, $sha, $fmt, $status, $rows,
               $errs, $lines, $reader, $msg, now())""",
            {
                "id": file_id,
                "k": kind.name,
                "p": rel,
                "size": size,
                "sha": digest,
                "fmt": file_format(path) or "unsupported",
                "status": res.status,
                "rows": res.rows,
                "errs": res.parse_errors,
                "lines": res.extra.get("physical_lines"),
                "reader": res.reader,
                "msg": res.message,
            },
        )
        level = "" if res.status == "loaded" else f" [{res.status.upper()}] {res.message}"
        log(f"{rel}: {res.rows:,} rows ({res.parse_errors:,} unparseable) via {res.reader}{level}")
        results.append(res)
    return results


def _load_file(con, path: Path, rel: str, file_id: int, kind: LandingKind) -> FileResult:
    fmt = file_format(path)
    if fmt is None:
        return FileResult(
            rel,
            "rejected",
            reader="none",
            message=f"{rel}: unsupported file type; expected .csv, .jsonl or .parquet (.csv/.jsonl may be gzipped)",
        )
    if path.stat().st_size == 0:
        return FileResult(rel, "empty", reader="none", message=f"{rel}: empty file (no header, no rows)")
    if fmt == "parquet":
        return _load_parquet(con, path, rel, file_id, kind)
    lines, read_error = count_lines(path)
    if fmt == "csv":
        res = None if read_error else _load_csv_native(con, path, rel, file_id, kind, lines)
    else:
        res = None if read_error else _load_jsonl_lines(con, path, rel, file_id, kind, lines)
    if res is None:
        res = _load_python_lines(con, path, rel, file_id, kind, fmt)
    res.extra["physical_lines"] = lines
    if read_error and res.status == "loaded":
        res.status = "partial"
        res.message = (
            f"{rel}: file is damaged ({read_error}); the {res.rows:,} lines before the "
            "damage were loaded, anything after it could not be read"
        )
    return res


# --- header and column mapping -------------------------------------------------------------


def _read_header(path: Path) -> list[str] | None:
    with _open_binary(path) as f:
        first = f.readline(MAX_LINE_BYTES)
    if not first.strip():
        return None
    return _header_names_from(first.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n"))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _select_contract(
    names: list[str], kind: LandingKind, source: dict[str, str] | None = None
) -> tuple[str, dict, list[str]]:
    """SELECT list mapping source columns onto the contract (by lower-cased name), extras into JSON.

    Identifiers come from the file's header, quoted (`source` maps a lower-cased name back to
    the file's own spelling); the extra columns' names reach json_object as bound parameters.
    Returns (select list, its parameters, required columns the header lacks).
    """
    source = source or {n: n for n in names}
    parts, params = [], {}
    for col in kind.columns:
        parts.append(
            f"CAST({_quote_ident(source[col])} AS VARCHAR) AS {_quote_ident(col)}"
            if col in names
            else f"NULL::VARCHAR AS {_quote_ident(col)}"
        )
    extras = [n for n in names if n not in kind.columns]
    if extras:
        args = []
        for i, n in enumerate(extras):
            params[f"xk{i}"] = n
            args.append(f"$xk{i}, CAST({_quote_ident(source[n])} AS VARCHAR)")
        parts.append(f"json_object({', '.join(args)})::VARCHAR AS extra")
    else:
        parts.append("NULL::VARCHAR AS extra")
    return ", ".join(parts), params, [c for c in kind.required if c not in names]


# --- CSV ----------------------------------------------------------------------------------


def _load_csv_native(con, path, rel, file_id, kind, physical_lines) -> FileResult | None:
    names = _read_header(path)
    if names is None:
        return None  # blank first line: let the line reader account for it
    select, params, missing = _select_contract(names, kind)
    con.execute("DROP TABLE IF EXISTS tf_rejects; DROP TABLE IF EXISTS tf_scans")
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE tf_stage AS
            SELECT ordinality AS k, {select}
            FROM read_csv($path, columns=$cols, header=true, auto_detect=false, delim=',', quote='"',
                          escape='"', max_line_size={MAX_LINE_BYTES}, store_rejects=true,
                          rejects_table='tf_rejects', rejects_scan='tf_scans') WITH ORDINALITY""",
            {**params, "path": str(path), "cols": {n: "VARCHAR" for n in names}},
        )
    except duckdb.Error:
        return None
    good = con.execute("SELECT count(*) FROM tf_stage").fetchall()[0][0]
    bad = con.execute("SELECT count(DISTINCT line) FROM tf_rejects").fetchall()[0][0]
    if good + bad != physical_lines - 1:
        return None  # some line was merged, skipped or swallowed: read line by line instead
    # good row k sits after j rejected lines, where the j-th rejected line (1-based) is preceded
    # by g_j = line_j - 1 - j good rows; an ASOF join finds the last j with g_j < k.
    con.execute(
        f"""INSERT INTO {kind.table}
        WITH rej AS (
            SELECT line, arg_min(error_type, coalesce(column_idx, 0)) AS error_type, any_value(csv_line) AS csv_line
            FROM tf_rejects GROUP BY line),
        ranked AS (SELECT line - 1 - row_number() OVER (ORDER BY line) AS g,
                          row_number() OVER (ORDER BY line) AS j FROM rej),
        cum AS (SELECT g, max(j) AS j FROM ranked GROUP BY g)  -- adjacent rejects share a g
        SELECT $file_id, $src, s.k + 1 + coalesce(cum.j, 0), {", ".join("s." + _quote_ident(c) for c in kind.columns)},
               s.extra, NULL, $missing
        FROM tf_stage s ASOF LEFT JOIN cum ON s.k > cum.g
        UNION ALL
        SELECT $file_id, $src, line, {", ".join("NULL" for _ in kind.columns)}, NULL,
               left(csv_line, {RAW_LINE_KEEP}), 'csv_' || lower(replace(error_type, ' ', '_'))
        FROM rej""",
        {"file_id": file_id, "src": rel, "missing": "missing_required_columns" if missing else None},
    )
    con.execute("DROP TABLE tf_stage")
    return FileResult(
        rel,
        "loaded",
        rows=good + bad,
        parse_errors=good + bad if missing else bad,
        reader="native_csv",
        message=_missing_message(rel, missing),
    )


# --- JSONL --------------------------------------------------------------------------------


def _json_select(kind: LandingKind, lines: str) -> str:
    """Parse tf_lines as JSON objects, once each: contract keys into columns (from_json to a
    struct of VARCHAR), other keys into `extra` (a merge patch with null per contract key
    removes them)."""
    cols = ", ".join(f"s.{_quote_ident(c)}" for c in kind.columns)
    return f"""SELECT $file_id, $src, line, {cols},
                   CASE WHEN ok THEN nullif(json_merge_patch(text, $drop)::VARCHAR, '{{}}') END,
                   CASE WHEN NOT ok THEN left(text, {RAW_LINE_KEEP}) END, err
            FROM (SELECT line, text, err, ok, CASE WHEN ok THEN from_json(text, $schema) END AS s FROM (
                SELECT line, text, err, err IS NULL AS ok FROM (
                    SELECT line, text, CASE WHEN text IS NULL OR trim(text) = '' THEN 'blank_line'
                                            WHEN NOT json_valid(text) THEN 'invalid_json'
                                            WHEN json_type(text) <> 'OBJECT' THEN 'json_not_object' END AS err
                    FROM {lines})))"""


def _load_jsonl_lines(con, path, rel, file_id, kind, physical_lines) -> FileResult | None:
    # Two steps on purpose: gzip decompression is single-threaded, and parsing a materialised
    # line table runs on every core (measured: 8 s vs 11 s for 3.3M lines in one pipeline).
    try:
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE tf_lines AS
            SELECT ordinality AS line, text
            FROM read_csv($path, columns={{'text': 'VARCHAR'}}, header=false, auto_detect=false,
                          delim=E'\\x1f', quote='', escape='', max_line_size={MAX_LINE_BYTES}) WITH ORDINALITY""",
            {"path": str(path)},
        )
    except duckdb.Error:
        return None
    n = con.execute("SELECT count(*) FROM tf_lines").fetchall()[0][0]
    if n != physical_lines:  # a line the reader merged or skipped: read line by line instead
        return None
    con.execute(
        f"INSERT INTO {kind.table} {_json_select(kind, 'tf_lines')}",
        {
            "file_id": file_id,
            "src": rel,
            "drop": json.dumps({c: None for c in kind.columns}),
            "schema": json.dumps({c: "VARCHAR" for c in kind.columns}),
        },
    )
    errs = con.execute(f"SELECT count(parse_error) FROM {kind.table} WHERE file_id = $f", {"f": file_id}).fetchall()[0][
        0
    ]
    con.execute("DROP TABLE tf_lines")
    return FileResult(rel, "loaded", rows=n, parse_errors=errs, reader="lines_jsonl")


# --- Parquet ------------------------------------------------------------------------------


def _load_parquet(con, path, rel, file_id, kind) -> FileResult:
    try:
        source_names = [
            d[0] for d in con.execute("DESCRIBE SELECT * FROM read_parquet($p)", {"p": str(path)}).fetchall()
        ]
    except duckdb.Error as e:
        return FileResult(
            rel, "rejected", reader="parquet", message=f"{rel}: not a readable Parquet file ({str(e).splitlines()[0]})"
        )
    source = {n.strip().lower(): n for n in source_names}
    select, params, missing = _select_contract(list(source), kind, source)
    try:
        con.execute(
            f"""INSERT INTO {kind.table}
            SELECT $file_id, $src, file_row_number + 1, {", ".join(map(_quote_ident, kind.columns))}, extra, NULL, $missing
            FROM (SELECT file_row_number, {select} FROM read_parquet($path, file_row_number=true))""",
            {
                **params,
                "path": str(path),
                "file_id": file_id,
                "src": rel,
                "missing": "missing_required_columns" if missing else None,
            },
        )
    except duckdb.Error as e:
        return FileResult(
            rel,
            "rejected",
            reader="parquet",
            message=f"{rel}: Parquet file could not be read ({str(e).splitlines()[0]})",
        )
    n = con.execute(f"SELECT count(*) FROM {kind.table} WHERE file_id = $f", {"f": file_id}).fetchall()[0][0]
    return FileResult(
        rel,
        "loaded",
        rows=n,
        parse_errors=n if missing else 0,
        reader="parquet",
        message=_missing_message(rel, missing),
    )


# --- Python line-by-line fallback ---------------------------------------------------------


def _iter_lines(path: Path) -> Iterator[tuple[int, bytes | None, str | None]]:
    """(line number, bytes, error) for each physical line; stops quietly at a damaged gzip tail."""
    with _open_binary(path) as f:
        i = 0
        while True:
            try:
                raw = f.readline(MAX_LINE_BYTES + 1)
            except (EOFError, OSError, zlib.error):
                return
            if not raw:
                return
            i += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                # consume the rest of the overlong line so the next one starts at a line break
                rest = raw
                while rest and not rest.endswith(b"\n"):
                    try:
                        rest = f.readline(MAX_LINE_BYTES)
                    except (EOFError, OSError, zlib.error):
                        return
                yield i, raw[:RAW_LINE_KEEP], "line_too_long"
                continue
            yield i, raw, None


def _load_python_lines(con, path, rel, file_id, kind, fmt) -> FileResult:
    names = None
    cols = {c: [] for c in ("line", *kind.columns, "extra", "raw_line", "parse_error")}
    total = errors = 0

    def flush():
        nonlocal cols
        if not cols["line"]:
            return
        tbl = pa.table({k: pa.array(v, type=pa.int64() if k == "line" else pa.string()) for k, v in cols.items()})
        con.register("tf_batch", tbl)
        con.execute(f"INSERT INTO {kind.table} SELECT $f, $s, * FROM tf_batch", {"f": file_id, "s": rel})
        con.unregister("tf_batch")
        cols = {c: [] for c in cols}

    def add(line, values: dict | None, raw_line: str | None, err: str | None):
        nonlocal total, errors
        total += 1
        errors += err is not None
        cols["line"].append(line)
        for c in kind.columns:
            cols[c].append(None if values is None else values.get(c))
        extra = None
        if values is not None:
            ex = {k: v for k, v in values.items() if k not in kind.columns}
            extra = json.dumps(ex, ensure_ascii=False) if ex else None
        cols["extra"].append(extra)
        cols["raw_line"].append(None if raw_line is None else raw_line[:RAW_LINE_KEEP])
        cols["parse_error"].append(err)
        if len(cols["line"]) >= FALLBACK_BATCH:
            flush()

    missing = None
    for i, raw, err in _iter_lines(path):
        shown = raw.decode("utf-8", errors="backslashreplace").rstrip("\r\n")
        if err:
            add(i, None, shown, err)
            continue
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            if fmt == "csv" and names is None:
                names = _header_names_from(shown)
                missing = [c for c in kind.required if c not in names]
                continue
            add(i, None, shown, "invalid_encoding")
            continue
        if fmt == "csv":
            if names is None:
                text = text.lstrip("\ufeff")
                if not text.strip():
                    add(i, None, text, "blank_line")
                    continue
                names = _header_names_from(text)
                missing = [c for c in kind.required if c not in names]
                continue
            if not text.strip():
                add(i, None, text, "blank_line")
                continue
            try:
                fields = next(csv.reader(io.StringIO(text), strict=True))
            except csv.Error:
                add(i, None, text, "csv_malformed_quotes")
                continue
            if len(fields) != len(names):
                add(i, None, text, "csv_too_many_columns" if len(fields) > len(names) else "csv_missing_columns")
                continue
            err = "missing_required_columns" if missing else None
            # an empty unquoted field is NULL, as DuckDB's reader gives it
            add(i, {n: (f if f != "" else None) for n, f in zip(names, fields)}, None, err)
        else:
            if not text.strip():
                add(i, None, text, "blank_line")
                continue
            try:
                obj = json.loads(text)
            except ValueError:
                add(i, None, text, "invalid_json")
                continue
            if not isinstance(obj, dict):
                add(i, None, text, "json_not_object")
                continue
            add(i, {str(k): _json_text(v) for k, v in obj.items()}, None, None)
    flush()
    status = "loaded"
    message = ""
    if fmt == "csv" and names is None:
        status, message = "empty", f"{rel}: no header line"
    elif missing:
        message = _missing_message(rel, missing)
    return FileResult(rel, status, rows=total, parse_errors=errors, reader="python_lines", message=message)


def _missing_message(rel: str, missing: list[str]) -> str:
    if not missing:
        return ""
    return (
        f"{rel}: header lacks required column(s) {', '.join(missing)}; every row is quarantined "
        "as missing_required_columns"
    )


def _header_names_from(text: str) -> list[str]:
    names = next(csv.reader([text])) if text.strip() else []
    out, seen = [], {}
    for i, raw in enumerate(names):
        name = raw.strip().lower() or f"column_{i + 1}"
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _json_text(v) -> str | None:
    """JSON value as the text DuckDB's ->> gives: strings bare, others as JSON."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))
