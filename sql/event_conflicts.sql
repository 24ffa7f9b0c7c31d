-- grain: one row per losing version of a conflicting event_id in the batch (temp relation).
-- A conflicting event_id is one id with several contents (user, item, type, timestamp, value).
-- The version whose first copy was ingested first (lowest file, then line) wins: a version
-- already clean from an earlier file, else the batch's earliest; every copy of the others is
-- quarantined as `conflicting_event_id`. Only ids with more than one new version, or already
-- clean, are examined, so this stays small next to the events.
CREATE OR REPLACE TEMP TABLE event_conflicts AS
WITH contested AS (
    SELECT event_id FROM event_versions
    WHERE kept_rowid IS NULL AND event_id IS NOT NULL
    GROUP BY event_id HAVING count(*) > 1 OR bool_or(id_taken)
)
SELECT * FROM event_versions
WHERE kept_rowid IS NULL AND event_id IN (SELECT event_id FROM contested)
QUALIFY id_taken OR rank() OVER (PARTITION BY event_id ORDER BY first_pos) > 1
