-- grain: one row per offending item (zero rows = pass): a catalog item (clean_items or seen in
-- the splits, what the models can be asked about) without a semantic ID, or an item whose full
-- 4-token code another item shares. semantic_id_rows is the code table under audit (item_id,
-- c1..c4), registered by models/generative/store.py: the warehouse table item_semantic_ids, or
-- the codes a generative checkpoint was trained with.
WITH catalog AS (
    SELECT item_id FROM clean_items UNION SELECT DISTINCT item_id FROM interaction_splits
),
shared AS (
    SELECT c1, c2, c3, c4 FROM semantic_id_rows GROUP BY c1, c2, c3, c4 HAVING count(*) > 1
)
SELECT item_id, 'no semantic id' AS problem FROM catalog
WHERE item_id NOT IN (SELECT item_id FROM semantic_id_rows)
UNION ALL
SELECT s.item_id, 'code ' || s.c1 || '-' || s.c2 || '-' || s.c3 || '-' || s.c4 || ' shared' AS problem
FROM semantic_id_rows s JOIN shared USING (c1, c2, c3, c4)
ORDER BY item_id;
