-- audit: every raw_events row is clean, an exact duplicate of a clean row, or quarantined.
-- One row of totals; passes when unaccounted = 0.
WITH t AS (
    SELECT (SELECT count(*) FROM raw_events) AS raw_rows,
           (SELECT count(*) FROM clean_interactions) AS clean_rows,
           (SELECT coalesce(sum(duplicate_count), 0) FROM clean_interactions)::BIGINT AS duplicate_rows,
           (SELECT count(*) FROM quarantined_events) AS quarantined_rows
)
SELECT *, raw_rows - clean_rows - duplicate_rows - quarantined_rows AS unaccounted FROM t
