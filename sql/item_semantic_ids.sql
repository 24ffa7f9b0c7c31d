-- grain: one row per catalog item: its 4-token semantic ID (c1..c3 residual-quantisation codes,
-- c4 the collision token: the item's index among items sharing c1..c3) under one tokenizer.
-- semantic_id_rows is the code table registered by models/generative/store.py.
CREATE OR REPLACE TABLE item_semantic_ids AS
SELECT CAST(item_id AS VARCHAR) AS item_id,
       CAST(c1 AS INTEGER) AS c1, CAST(c2 AS INTEGER) AS c2, CAST(c3 AS INTEGER) AS c3,
       CAST(c4 AS INTEGER) AS c4,
       CAST($tokenizer_version AS VARCHAR) AS tokenizer_version  -- artifacts/semantic_ids/tokenizers/<version>
FROM semantic_id_rows
ORDER BY item_id;
