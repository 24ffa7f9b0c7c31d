-- grain: one row per valid event content first seen in the batch (appended to
-- clean_interactions): neither already clean (event_versions.kept_rowid) nor a losing version of
-- a conflicting event_id. Its copies in the batch after the first are its duplicate_count.
INSERT INTO clean_interactions
SELECT v.event_id,
       v.user_id,
       v.item_id,
       v.event_type,
       v.ts,
       v.value,
       list_contains($positive_types, v.event_type)
           AND (NOT list_contains($rating_types, v.event_type) OR v.value >= $min_positive_rating)
           AS is_positive,
       list_contains($negative_types, v.event_type)
           OR (list_contains($rating_types, v.event_type) AND v.value < $min_positive_rating)
           AS is_negative,
       f.path AS source_file,
       v.first_pos % 10000000000 AS line,    -- pos = file_id * 1e10 + line
       (v.copies - 1)::BIGINT AS duplicate_count
FROM event_versions v
JOIN event_batch f ON f.file_id = v.first_pos // 10000000000
WHERE v.kept_rowid IS NULL
  AND v.first_pos NOT IN (SELECT first_pos FROM event_conflicts)
