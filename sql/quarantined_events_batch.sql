-- grain: one row per raw_events row of the batch that is neither clean nor an exact duplicate
-- (appended to quarantined_events), with the reason code, the location (file, line) and the raw
-- text of its fields.
INSERT INTO quarantined_events
WITH failed AS (
    SELECT pos, reason FROM typed_events WHERE reason IS NOT NULL
    UNION ALL
    -- every copy in the batch of a losing version of a conflicting event_id
    SELECT t.pos, 'conflicting_event_id'
    FROM typed_events t
    JOIN event_conflicts l
      ON t.event_id = l.event_id AND t.user_id = l.user_id AND t.item_id = l.item_id
     AND t.event_type = l.event_type AND t.ts = l.ts AND t.value IS NOT DISTINCT FROM l.value
    WHERE t.reason IS NULL
)
SELECT r.source_file, r.line, q.reason, r.event_id, r.user_id, r.item_id, r.event_type,
       r."timestamp", r.value, r.raw_line, r.extra
FROM failed q
JOIN raw_events r ON r.file_id = q.pos // 10000000000 AND r.line = q.pos % 10000000000
WHERE r.file_id IN (SELECT file_id FROM event_batch)
