-- grain: one row per distinct typed content among rule-passing events (temp relation).
-- Exact duplicates (same event_id, user, item, type, timestamp and value) collapse here onto
-- their first copy in ingest order; `copies - 1` of them are counted as duplicates.
-- Conflicting event_ids (one id, different content): the version whose first copy was
-- ingested first (lowest file, then line) wins (conflict_rank = 1); later versions are
-- quarantined as `conflicting_event_id`, every copy of them.
CREATE OR REPLACE TEMP TABLE event_versions AS
WITH versions AS (
    SELECT event_id, user_id, item_id, event_type, ts, value,
           min(pos) AS first_pos,
           arg_min_null(source_file, pos) AS source_file,
           arg_min_null(line, pos) AS line,
           arg_min_null(extra, pos) AS extra,
           count(*) AS copies
    FROM typed_events
    WHERE reason IS NULL
    GROUP BY event_id, user_id, item_id, event_type, ts, value
)
SELECT *,
       CASE WHEN event_id IS NULL THEN 1
            ELSE rank() OVER (PARTITION BY event_id ORDER BY first_pos) END AS conflict_rank
FROM versions
