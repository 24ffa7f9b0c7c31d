-- audit: offending landing files of one kind ($kind: events or items), i.e. loaded files whose
-- raw rows do not match their physical lines (CSV: lines - header; JSONL: lines) or what ingest
-- recorded.
WITH loaded AS (
    SELECT f.file_id, f.kind, f.path, f.format, f.physical_lines, f.rows_loaded,
           coalesce(e.n, 0) + coalesce(i.n, 0) AS raw_rows
    FROM ingested_files f
    LEFT JOIN (SELECT file_id, count(*) AS n FROM raw_events GROUP BY file_id) e USING (file_id)
    LEFT JOIN (SELECT file_id, count(*) AS n FROM raw_items GROUP BY file_id) i USING (file_id)
    WHERE f.status = 'loaded' AND f.kind = $kind
)
SELECT path, format, physical_lines, rows_loaded, raw_rows
FROM loaded
WHERE raw_rows <> rows_loaded
   OR (format = 'csv' AND physical_lines IS NOT NULL AND rows_loaded <> greatest(physical_lines - 1, 0))
   OR (format = 'jsonl' AND physical_lines IS NOT NULL AND rows_loaded <> physical_lines)
ORDER BY path
