-- grain: one row per raw_items row that failed a rule, with its reason and raw text.
CREATE OR REPLACE TABLE quarantined_items AS
SELECT source_file, line, reason, item_id, title, categories_text AS categories_raw,
       created_at_raw, raw_line, extra
FROM typed_items
WHERE reason IS NOT NULL
ORDER BY source_file, line
