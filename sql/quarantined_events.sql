-- grain: one row per raw_events row that is neither clean nor an exact duplicate, with the
-- reason code, the location (file, line) and the raw text of the fields for debugging.
CREATE OR REPLACE TABLE quarantined_events AS
WITH losers AS (
    SELECT event_id, user_id, item_id, event_type, ts, value
    FROM event_versions WHERE conflict_rank > 1
)
SELECT t.source_file, t.line, t.reason, t.event_id, t.user_id, t.item_id, t.event_type,
       t.timestamp_raw, t.value_raw, t.raw_line, t.extra
FROM typed_events t
WHERE t.reason IS NOT NULL
UNION ALL
SELECT t.source_file, t.line, 'conflicting_event_id', t.event_id, t.user_id, t.item_id,
       t.event_type, t.timestamp_raw, t.value_raw, t.raw_line, t.extra
FROM typed_events t
JOIN losers l
  ON t.event_id = l.event_id AND t.user_id = l.user_id AND t.item_id = l.item_id
 AND t.event_type = l.event_type AND t.ts = l.ts AND t.value IS NOT DISTINCT FROM l.value
WHERE t.reason IS NULL
ORDER BY source_file, line
