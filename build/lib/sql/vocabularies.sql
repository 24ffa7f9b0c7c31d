-- grain: one row per (vocabulary, key) seen in the train split at least $min_count times.
-- vocabularies: user_id, item_id, category, title_token. Index layout shared by every
-- vocabulary: 0 = padding, 1..$num_buckets = hash buckets for unseen / rare keys, then the
-- known keys by descending count (ties by key) from $num_buckets + 1.
CREATE OR REPLACE TABLE vocabularies AS
WITH train AS (
    SELECT user_id, item_id FROM interaction_splits WHERE split = 'train'
),
train_items AS (
    SELECT i.item_id, i.categories, i.title, t.n
    FROM (SELECT item_id, count(*) AS n FROM train GROUP BY item_id) t
    JOIN clean_items i USING (item_id)
),
counts AS (
    SELECT 'user_id' AS vocabulary, user_id AS key, count(*) AS count FROM train GROUP BY user_id
    UNION ALL
    SELECT 'item_id', item_id, count(*) FROM train GROUP BY item_id
    UNION ALL
    -- content vocabularies count train interactions of items carrying the key
    SELECT 'category', c, sum(n) FROM (SELECT unnest(categories) AS c, n FROM train_items) GROUP BY c
    UNION ALL
    SELECT 'title_token', tok, sum(n) FROM (
        SELECT unnest(regexp_split_to_array(
                   lower(regexp_replace(title, '\(([0-9]{4})\)\s*$', '')), '[^a-z0-9]+')) AS tok, n
        FROM train_items) WHERE length(tok) >= 2 GROUP BY tok
)
SELECT vocabulary, key, count::BIGINT AS count,
       ($num_buckets + row_number() OVER (PARTITION BY vocabulary ORDER BY count DESC, key))::INTEGER AS idx
FROM counts
WHERE count >= CASE vocabulary WHEN 'user_id' THEN $min_count_ids WHEN 'item_id' THEN $min_count_ids
                               ELSE $min_count_features END
ORDER BY vocabulary, idx
