-- grain: one row per physical data line (or Parquet row) of an events landing file.
-- Every contract column is text; typing happens in typed_events.sql.
CREATE TABLE IF NOT EXISTS raw_events (
    file_id      INTEGER NOT NULL,        -- ingested_files.file_id
    source_file  VARCHAR NOT NULL,        -- relative to landing/
    line         BIGINT NOT NULL,         -- physical line (CSV header = 1) or Parquet row + 1
    event_id     VARCHAR,
    user_id      VARCHAR,
    item_id      VARCHAR,
    event_type   VARCHAR,
    "timestamp"  VARCHAR,
    value        VARCHAR,
    extra        VARCHAR,                 -- JSON object of non-contract columns
    raw_line     VARCHAR,                 -- the line's text when it could not be parsed
    parse_error  VARCHAR                  -- NULL when parsed
)
