-- grain: one row per losing version of a conflicting event_id (temp relation).
-- A conflicting event_id is one id with several contents (user, item, type, timestamp, value).
-- The version whose first copy was ingested first (lowest file, then line) wins; every copy of
-- the others is quarantined as `conflicting_event_id`. Only ids on more than one valid row
-- are examined, so this stays small next to the events.
CREATE OR REPLACE TEMP TABLE event_conflicts AS
WITH repeated AS (
    SELECT event_id FROM typed_events
    WHERE reason IS NULL AND event_id IS NOT NULL
    GROUP BY event_id HAVING count(*) > 1
),
versions AS (
    SELECT event_id, user_id, item_id, event_type, ts, value, min(pos) AS first_pos
    FROM typed_events
    WHERE reason IS NULL AND event_id IN (SELECT event_id FROM repeated)
    GROUP BY event_id, user_id, item_id, event_type, ts, value
)
SELECT * FROM versions
QUALIFY rank() OVER (PARTITION BY event_id ORDER BY first_pos) > 1
