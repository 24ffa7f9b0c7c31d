-- grain: one row per events landing file to clean in this pass (temp relation): every live file
-- of the ingest ledger (not superseded) that cleaned_event_files does not hold yet. After a full
-- re-clean has emptied that ledger, every live file. New files always have higher file_ids than
-- the files cleaned before them, so the batch comes last in ingest order.
CREATE OR REPLACE TEMP TABLE event_batch AS
SELECT file_id, path
FROM ingested_files
WHERE kind = 'events' AND status <> 'superseded'
  AND file_id NOT IN (SELECT file_id FROM cleaned_event_files)
