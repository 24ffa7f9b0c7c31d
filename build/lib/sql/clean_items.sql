-- grain: one row per item_id. When an item appears several times, the last version in ingest
-- order (latest file, then line) wins whole (NULLs included); the others are counted in
-- superseded_count.
CREATE OR REPLACE TABLE clean_items AS
WITH latest AS (
    SELECT item_id,
           arg_max_null(title, pos) AS title,
           arg_max_null(categories, pos) AS categories,
           arg_max_null(created_at, pos) AS created_at,
           arg_max_null(year, pos) AS year,
           arg_max_null(extra, pos) AS attributes,      -- JSON object of the extra columns
           arg_max_null(source_file, pos) AS source_file,
           arg_max_null(line, pos) AS line,
           (count(*) - 1)::BIGINT AS superseded_count
    FROM typed_items
    WHERE reason IS NULL
    GROUP BY item_id
)
SELECT *,
       -- content hash: changes when anything an item embedding may depend on changes
       md5(to_json(struct_pack(title, categories, created_at, year, attributes))::VARCHAR) AS content_hash
FROM latest
ORDER BY item_id
