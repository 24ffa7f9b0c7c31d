-- grain: one row per distinct valid event content (event_id, user, item, type, timestamp, value)
-- among the batch's rows (temp relation), with its first copy in ingest order and its number of
-- copies in the batch. `kept_rowid` is the clean_interactions row holding the same content from
-- an earlier file (its copies here are exact duplicates of it); `id_taken` says the event_id is
-- already clean with another content (so this version loses: the earlier file's version won).
CREATE OR REPLACE TEMP TABLE event_versions AS
WITH versions AS (
    SELECT event_id, user_id, item_id, event_type, ts, value,
           min(pos) AS first_pos,
           count(*) AS copies
    FROM typed_events
    WHERE reason IS NULL
    GROUP BY event_id, user_id, item_id, event_type, ts, value
)
SELECT v.*,
       c.rowid AS kept_rowid,
       coalesce(v.event_id IN (SELECT event_id FROM clean_interactions WHERE event_id IS NOT NULL), false)
           AS id_taken
FROM versions v
LEFT JOIN clean_interactions c
  ON c.ts = v.ts AND c.user_id = v.user_id AND c.item_id = v.item_id AND c.event_type = v.event_type
 AND c.event_id IS NOT DISTINCT FROM v.event_id AND c.value IS NOT DISTINCT FROM v.value
