-- audit: every raw_items row is a clean item, a superseded older version, or quarantined.
WITH t AS (
    SELECT (SELECT count(*) FROM raw_items) AS raw_rows,
           (SELECT count(*) FROM clean_items) AS clean_rows,
           (SELECT coalesce(sum(superseded_count), 0) FROM clean_items)::BIGINT AS superseded_rows,
           (SELECT count(*) FROM quarantined_items) AS quarantined_rows
)
SELECT *, raw_rows - clean_rows - superseded_rows - quarantined_rows AS unaccounted FROM t
