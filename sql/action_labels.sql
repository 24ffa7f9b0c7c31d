-- grain: one row per (user_id, item_id, ts) exposure: every clean event is an exposure, so an
-- impression with no action is an all-zero row. Bit a of action_mask is action a of the
-- configured vocabulary (models/ranking/labels.py), bound as parallel lists: an event fires
-- action a when its type is $event_types[i] for an i with $action_idx[i] = a and its value lies
-- within [$min_values[i], $max_values[i]] (NULL = unbounded).
CREATE OR REPLACE TABLE action_labels AS
WITH vocabulary AS (
    SELECT unnest($action_idx) AS idx, unnest($event_types) AS event_type,
           unnest($min_values)::DOUBLE AS min_value, unnest($max_values)::DOUBLE AS max_value
),
fired AS (
    SELECT e.user_id, e.item_id, e.ts,
           CASE WHEN v.idx IS NULL THEN 0 ELSE (1::BIGINT << v.idx::BIGINT) END AS bit
    FROM clean_interactions e
    LEFT JOIN vocabulary v
      ON e.event_type = v.event_type
     AND (v.min_value IS NULL OR e.value >= v.min_value)
     AND (v.max_value IS NULL OR e.value <= v.max_value)
)
SELECT user_id, item_id, ts,
       bit_or(bit)::BIGINT AS action_mask   -- 0: exposed, no action of the vocabulary
FROM fired
GROUP BY user_id, item_id, ts
ORDER BY user_id, ts, item_id
