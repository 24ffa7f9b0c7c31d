-- grain: one row per action the ranker predicts (idx = its bit in action_labels.action_mask),
-- with its weight in the ranking score; bound from models/ranking/labels.py.
CREATE OR REPLACE TABLE action_vocabulary AS
SELECT unnest($idx)::INTEGER AS idx, unnest($names) AS name, unnest($weights)::DOUBLE AS weight,
       unnest($definitions) AS definition   -- event types and value range that fire it
ORDER BY idx
