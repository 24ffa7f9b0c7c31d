-- The batch's copies of contents already in clean_interactions (kept from an earlier file) are
-- exact duplicates: each such row's duplicate_count grows by its copies in the batch.
UPDATE clean_interactions
SET duplicate_count = clean_interactions.duplicate_count + v.copies
FROM event_versions v
WHERE v.kept_rowid = clean_interactions.rowid
