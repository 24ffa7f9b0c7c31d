-- grain: one row per raw_items row (temp relation), typed, with the first broken rule in `reason`.
-- categories: a JSON list or '|'-separated text -> lower-cased, trimmed, distinct, sorted.
-- year: an explicit `year` attribute, else a "(1995)" suffix of the title.
CREATE OR REPLACE TEMP TABLE typed_items AS
WITH trimmed AS (
    SELECT file_id, source_file, line, raw_line, parse_error, extra,
           created_at AS created_at_raw,
           nullif(trim(item_id), '') AS item_id,
           nullif(trim(title), '') AS title,
           nullif(trim(categories), '') AS categories_text,
           nullif(trim(created_at), '') AS created_text,
           file_id::BIGINT * 10000000000 + line AS pos
    FROM raw_items
),
typed AS (
    SELECT *,
           list_sort(list_distinct(list_filter(
               list_transform(
                   CASE WHEN starts_with(categories_text, '[')
                        THEN try_cast(categories_text AS VARCHAR[])
                        ELSE string_split(categories_text, '|') END,
                   lambda c: lower(trim(c))),
               lambda c: c <> ''))) AS categories,
           CASE WHEN regexp_full_match(created_text, '[0-9]{1,14}(\.[0-9]+)?')
                THEN timezone('UTC', to_timestamp(CASE WHEN created_text::DOUBLE >= 1e11
                                                       THEN created_text::DOUBLE / 1000
                                                       ELSE created_text::DOUBLE END))
                ELSE timezone('UTC', try_cast(created_text AS TIMESTAMPTZ)) END AS created_at,
           coalesce(try_cast(json_extract_string(extra, '$.year') AS INTEGER),
                    try_cast(regexp_extract(title, '\(([0-9]{4})\)\s*$', 1) AS INTEGER)) AS year
    FROM trimmed
)
SELECT file_id, source_file, line, pos, item_id, title, categories, created_at, year,
       created_at_raw, categories_text, raw_line, extra,
       CASE
           WHEN parse_error IS NOT NULL THEN parse_error
           WHEN item_id IS NULL THEN 'missing_item_id'
           WHEN length(item_id) > $max_id_length THEN 'oversized_id'
           WHEN regexp_matches(item_id, '[\x00-\x1f\x7f]') THEN 'control_character_in_id'
           WHEN length(coalesce(title, '')) > $max_text_length THEN 'oversized_title'
           WHEN created_text IS NOT NULL AND created_at IS NULL THEN 'unparseable_created_at'
           WHEN categories_text IS NOT NULL AND categories IS NULL THEN 'unparseable_categories'
       END AS reason
FROM typed
