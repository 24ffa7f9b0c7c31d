-- grain: one row per landing file version seen by ingest (path + size + sha256).
-- status: loaded | partial (damaged tail) | rejected (unreadable; message says why) | empty
--         | superseded (a later version of the same path replaced its rows)
CREATE TABLE IF NOT EXISTS ingested_files (
    file_id        INTEGER PRIMARY KEY,
    kind           VARCHAR NOT NULL,      -- events | items
    path           VARCHAR NOT NULL,      -- relative to landing/
    size           BIGINT NOT NULL,
    sha256         VARCHAR NOT NULL,
    format         VARCHAR NOT NULL,
    status         VARCHAR NOT NULL,
    rows_loaded    BIGINT NOT NULL,       -- rows written to the raw table, parse errors included
    parse_errors   BIGINT NOT NULL,
    physical_lines BIGINT,                -- NULL for Parquet; header line included for CSV
    reader         VARCHAR NOT NULL,      -- native_csv | lines_jsonl | parquet | python_lines | none
    message        VARCHAR,
    ingested_at    TIMESTAMPTZ NOT NULL
)
