-- grain: one row per (user_id, split, cut, item_id) candidate the ranker trains or is evaluated
-- on (cut: 0 for valid / test, 0 .. train_cuts - 1 for the train cuts of a user).
-- Inputs registered by models/ranking/data.py: ranking_cuts (user_id, split, cut, cut_ts, end_ts,
-- target_item: what the user's history may see, where the label window ends, the item at the
-- cut), ranking_known (user_id, split, cut, item_id: each cut's history, the pairs before its
-- target by the one rule of models/splits/history.py) and retrieved (user_id, split, cut,
-- item_id, retrieval_rank, retrieval_score: the champion two-tower's top N for that history,
-- its items excluded).
-- Labels: the OR of action_mask over the user's exposures in [cut_ts, end_ts) (action_labels).
-- train rows also take label-window exposures that retrieval missed (retrieved = false), so the
-- ranker sees what users actually engaged with (their retrieval_score is filled in afterwards by
-- models/ranking/data.py, retrieval_rank stays NULL); valid/test rows are the retrieved lists only.
-- No leakage: a train cut and its window end before the user's first valid/test pair.
CREATE OR REPLACE TABLE ranking_candidates AS
WITH window_labels AS (
    SELECT c.user_id, c.split, c.cut, l.item_id, bit_or(l.action_mask)::BIGINT AS action_mask
    FROM ranking_cuts c
    JOIN action_labels l
      ON l.user_id = c.user_id AND l.ts >= c.cut_ts AND (c.end_ts IS NULL OR l.ts < c.end_ts)
    GROUP BY c.user_id, c.split, c.cut, l.item_id
),
known AS (  -- a train cut's history: never a candidate
    SELECT user_id, cut, item_id FROM ranking_known WHERE split = 'train'
),
missed AS (
    SELECT w.user_id, w.split, w.cut, w.item_id
    FROM window_labels w
    WHERE w.split = 'train'
      AND NOT EXISTS (SELECT 1 FROM known k
                      WHERE k.user_id = w.user_id AND k.cut = w.cut AND k.item_id = w.item_id)
      AND NOT EXISTS (SELECT 1 FROM retrieved r
                      WHERE r.user_id = w.user_id AND r.split = w.split AND r.cut = w.cut
                        AND r.item_id = w.item_id)
),
pool AS (
    SELECT user_id, split, cut::INTEGER AS cut, item_id, retrieval_rank::INTEGER AS retrieval_rank,
           retrieval_score::FLOAT AS retrieval_score, true AS retrieved
    FROM retrieved
    UNION ALL
    SELECT user_id, split, cut::INTEGER, item_id, NULL::INTEGER, NULL::FLOAT, false FROM missed
)
SELECT p.user_id, p.split, p.cut, p.item_id, p.retrieval_rank, p.retrieval_score, p.retrieved,
       coalesce(w.action_mask, 0)::BIGINT AS action_mask,   -- 0: retrieved, never engaged in the window
       p.item_id = c.target_item AS is_target,               -- the split's held-out positive pair
       c.cut_ts, c.end_ts, c.target_item
FROM pool p
JOIN ranking_cuts c USING (user_id, split, cut)
LEFT JOIN window_labels w USING (user_id, split, cut, item_id)
ORDER BY p.user_id, p.split, p.cut, p.retrieved DESC, p.retrieval_rank, p.item_id
