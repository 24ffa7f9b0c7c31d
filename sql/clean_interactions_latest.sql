-- grain: the clean_interactions rows the latest cleaning pass added: the rows kept from the
-- files of its batch (cleaned_event_files), or the whole table after a full pass. What the
-- expectation check validates, so a pass over one new file is validated on that file's rows.
WITH latest AS (
    SELECT path, mode FROM cleaned_event_files
    WHERE batch = (SELECT max(batch) FROM cleaned_event_files)
)
SELECT c.*
FROM clean_interactions c
WHERE (SELECT any_value(mode) FROM latest) = 'full'
   OR c.source_file IN (SELECT path FROM latest)
