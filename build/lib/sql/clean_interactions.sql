-- grain: one row per distinct valid event. Exact duplicates (same event_id, user, item, type,
-- timestamp and value) collapse onto their first copy in ingest order; the other copies are
-- counted in duplicate_count. Losing versions of conflicting event_ids (event_conflicts.sql)
-- are left out. Positive / negative mapping comes from configuration. Extra columns stay in
-- raw_events (join on source_file, line).
CREATE OR REPLACE TABLE clean_interactions AS
WITH versions AS (
    SELECT event_id, user_id, item_id, event_type, ts, value,
           min(pos) AS first_pos,
           count(*) AS copies
    FROM typed_events
    WHERE reason IS NULL
    GROUP BY event_id, user_id, item_id, event_type, ts, value
)
SELECT v.event_id,
       v.user_id,
       v.item_id,
       v.event_type,
       v.ts,                                 -- UTC
       v.value,
       list_contains($positive_types, v.event_type)
           AND (NOT list_contains($rating_types, v.event_type) OR v.value >= $min_positive_rating)
           AS is_positive,
       list_contains($negative_types, v.event_type)
           OR (list_contains($rating_types, v.event_type) AND v.value < $min_positive_rating)
           AS is_negative,
       f.path AS source_file,                -- where the kept (first) copy came from
       v.first_pos % 10000000000 AS line,    -- pos = file_id * 1e10 + line
       (v.copies - 1)::BIGINT AS duplicate_count
FROM versions v
JOIN ingested_files f ON f.file_id = v.first_pos // 10000000000
WHERE v.first_pos NOT IN (SELECT first_pos FROM event_conflicts)
