-- audit: offending events landing files, i.e. files whose cleaning ledger (cleaned_event_files)
-- disagrees with the tables: raw rows in raw_events, clean rows kept from the file, its
-- quarantined rows, or raw <> clean + duplicates + quarantined. Live files the cleaning has not
-- seen are offending too. Passes with zero rows.
WITH live AS (
    SELECT file_id, path FROM ingested_files WHERE kind = 'events' AND status <> 'superseded'
),
raw AS (SELECT file_id, count(*) AS n FROM raw_events GROUP BY 1),
kept AS (SELECT source_file AS path, count(*) AS n FROM clean_interactions GROUP BY 1),
quarantined AS (SELECT source_file AS path, count(*) AS n FROM quarantined_events GROUP BY 1)
SELECT l.path,
       coalesce(raw.n, 0) AS raw_rows,
       c.raw_rows AS ledger_raw,
       coalesce(kept.n, 0) AS clean_rows,
       c.clean_rows AS ledger_clean,
       c.duplicate_rows AS ledger_duplicates,
       coalesce(q.n, 0) AS quarantined_rows,
       c.quarantined_rows AS ledger_quarantined
FROM live l
LEFT JOIN cleaned_event_files c USING (file_id)
LEFT JOIN raw USING (file_id)
LEFT JOIN kept ON kept.path = l.path
LEFT JOIN quarantined q ON q.path = l.path
WHERE c.file_id IS NULL
   OR c.raw_rows <> coalesce(raw.n, 0)
   OR c.clean_rows <> coalesce(kept.n, 0)
   OR c.quarantined_rows <> coalesce(q.n, 0)
   OR c.duplicate_rows < 0
   OR c.raw_rows <> c.clean_rows + c.duplicate_rows + c.quarantined_rows
ORDER BY l.path
