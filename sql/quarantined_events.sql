-- grain: one row per raw_events row that is neither clean nor an exact duplicate, with the
-- reason code, the location (file, line) and the raw text of its fields for debugging.
-- Appended file by file (quarantined_events_batch.sql).
CREATE TABLE IF NOT EXISTS quarantined_events (
    source_file    VARCHAR NOT NULL,  -- relative to landing/
    line           BIGINT NOT NULL,   -- physical line (CSV header = 1) or Parquet row + 1
    reason         VARCHAR NOT NULL,  -- the first rule the row breaks (sql/typed_events.sql)
    event_id       VARCHAR,
    user_id        VARCHAR,
    item_id        VARCHAR,
    event_type     VARCHAR,
    timestamp_raw  VARCHAR,           -- the timestamp's text as landed
    value_raw      VARCHAR,
    raw_line       VARCHAR,           -- the line's text when it could not be parsed
    extra          VARCHAR            -- JSON object of non-contract columns
)
