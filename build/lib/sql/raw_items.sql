-- grain: one row per physical data line (or Parquet row) of an items landing file.
CREATE TABLE IF NOT EXISTS raw_items (
    file_id      INTEGER NOT NULL,
    source_file  VARCHAR NOT NULL,
    line         BIGINT NOT NULL,
    item_id      VARCHAR,
    title        VARCHAR,
    categories   VARCHAR,                 -- JSON list or '|'-separated text
    created_at   VARCHAR,
    extra        VARCHAR,                 -- JSON object of other attributes
    raw_line     VARCHAR,
    parse_error  VARCHAR
)
