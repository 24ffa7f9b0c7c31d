-- grain: one row per distinct valid event (exact duplicates collapsed, counted in
-- duplicate_count). Positive / negative mapping comes from configuration.
CREATE OR REPLACE TABLE clean_interactions AS
SELECT event_id,
       user_id,
       item_id,
       event_type,
       ts,                                   -- UTC
       value,
       list_contains($positive_types, event_type)
           AND (NOT list_contains($rating_types, event_type) OR value >= $min_positive_rating)
           AS is_positive,
       list_contains($negative_types, event_type)
           OR (list_contains($rating_types, event_type) AND value < $min_positive_rating)
           AS is_negative,
       source_file,                          -- where the kept copy came from
       line,
       (copies - 1)::BIGINT AS duplicate_count,
       extra
FROM event_versions
WHERE conflict_rank = 1
ORDER BY ts, user_id, item_id
