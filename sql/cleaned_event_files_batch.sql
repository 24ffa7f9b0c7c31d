-- grain: one row per file of the batch (appended to cleaned_event_files). Raw rows are counted
-- from the typed rows, clean and quarantined rows from what this pass wrote; the rest of the
-- file's rows are exact duplicates (the accounting audits check the sums against the tables).
INSERT INTO cleaned_event_files
WITH raw AS (
    SELECT pos // 10000000000 AS file_id, count(*) AS n FROM typed_events GROUP BY 1
),
kept AS (
    SELECT first_pos // 10000000000 AS file_id, count(*) AS n
    FROM event_versions
    WHERE kept_rowid IS NULL AND first_pos NOT IN (SELECT first_pos FROM event_conflicts)
    GROUP BY 1
),
quarantined AS (
    SELECT source_file AS path, count(*) AS n
    FROM quarantined_events
    WHERE source_file IN (SELECT path FROM event_batch)
    GROUP BY 1
)
SELECT b.file_id, b.path, $batch, $mode, $rules,
       coalesce(raw.n, 0),
       coalesce(kept.n, 0),
       coalesce(raw.n, 0) - coalesce(kept.n, 0) - coalesce(q.n, 0),
       coalesce(q.n, 0),
       now()
FROM event_batch b
LEFT JOIN raw ON raw.file_id = b.file_id
LEFT JOIN kept ON kept.file_id = b.file_id
LEFT JOIN quarantined q ON q.path = b.path
