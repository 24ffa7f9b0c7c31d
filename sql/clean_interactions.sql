-- grain: one row per distinct valid event. Exact duplicates (same event_id, user, item, type,
-- timestamp and value) collapse onto their first copy in ingest order, in whichever file it is;
-- the other copies are counted in duplicate_count. Losing versions of conflicting event_ids
-- (event_conflicts.sql) are left out. Positive / negative mapping comes from configuration.
-- Extra columns stay in raw_events (join on source_file, line). Filled file by file:
-- clean_interactions_batch.sql appends a batch's new contents, clean_interactions_duplicates.sql
-- counts its copies of contents already here.
CREATE TABLE IF NOT EXISTS clean_interactions (
    event_id         VARCHAR,
    user_id          VARCHAR NOT NULL,
    item_id          VARCHAR NOT NULL,
    event_type       VARCHAR NOT NULL,
    ts               TIMESTAMP NOT NULL,  -- UTC
    value            DOUBLE,
    is_positive      BOOLEAN,
    is_negative      BOOLEAN,
    source_file      VARCHAR NOT NULL,    -- where the kept (first) copy came from
    line             BIGINT NOT NULL,     -- its line in that file
    duplicate_count  BIGINT NOT NULL      -- exact copies ingested after it, in any file
)
