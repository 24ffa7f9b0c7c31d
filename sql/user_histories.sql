-- grain: one row per known user (a user with at least one positive pair in interaction_splits,
-- any split). items: the user's items, oldest first (by the pair's first positive, ties by item
-- id; the order models/retrieval/data.py builds histories in): the online service reads the
-- last history_len as the user tower's history and excludes all of them from recommendations.
SELECT user_id, list(item_id ORDER BY ts, item_id) AS items
FROM interaction_splits
GROUP BY user_id
ORDER BY user_id
