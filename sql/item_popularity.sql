-- grain: one row per item with a positive pair, the $limit most popular only. pairs: how many
-- users have a positive pair with the item (any split). The online service's answer for a caller
-- with neither a known user id nor recent items (flagged as the popularity fallback).
SELECT item_id, count(*)::BIGINT AS pairs
FROM interaction_splits
GROUP BY item_id
ORDER BY pairs DESC, item_id
LIMIT $limit
