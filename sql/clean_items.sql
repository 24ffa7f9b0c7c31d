-- grain: one row per item_id. When an item appears several times, the last version in ingest
-- order (latest file, then line) wins; the others are counted in superseded_count.
CREATE OR REPLACE TABLE clean_items AS
SELECT item_id,
       arg_max(title, pos) AS title,
       arg_max(categories, pos) AS categories,
       arg_max(created_at, pos) AS created_at,
       arg_max(year, pos) AS year,
       arg_max(extra, pos) AS attributes,      -- JSON object of the extra columns
       arg_max(source_file, pos) AS source_file,
       arg_max(line, pos) AS line,
       (count(*) - 1)::BIGINT AS superseded_count,
       -- content hash: changes when anything an item embedding depends on changes
       md5(concat_ws(chr(31), arg_max(title, pos), array_to_string(arg_max(categories, pos), '|'),
                     arg_max(created_at, pos)::VARCHAR, arg_max(year, pos)::VARCHAR,
                     arg_max(extra, pos))) AS content_hash
FROM typed_items
WHERE reason IS NULL
GROUP BY item_id
ORDER BY item_id
