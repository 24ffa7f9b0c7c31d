-- grain: one row per events landing file the cleaning has cleaned: what became of its raw rows.
-- A file is cleaned once, when it is new (incremental), or again with every file in a full
-- re-clean (rules or cleaning SQL changed, a file replaced). Its figures are final when written:
-- later files come later in ingest order, so they never take a row's place as the kept copy.
CREATE TABLE IF NOT EXISTS cleaned_event_files (
    file_id           INTEGER PRIMARY KEY,  -- ingested_files.file_id
    path              VARCHAR NOT NULL,     -- relative to landing/
    batch             INTEGER NOT NULL,     -- the cleaning pass that cleaned it (1 = the last full one)
    mode              VARCHAR NOT NULL,     -- full | incremental
    rules             VARCHAR NOT NULL,     -- digest of the cleaning rules and SQL it was cleaned by
    raw_rows          BIGINT NOT NULL,
    clean_rows        BIGINT NOT NULL,      -- rows of clean_interactions whose kept copy is in this file
    duplicate_rows    BIGINT NOT NULL,      -- its rows that are exact copies of a clean row (from any file)
    quarantined_rows  BIGINT NOT NULL,
    cleaned_at        TIMESTAMPTZ NOT NULL
)
