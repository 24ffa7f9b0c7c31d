-- audit: offending users, i.e. users with a valid/test pair earlier than one of their train pairs.
SELECT user_id,
       max(ts) FILTER (WHERE split = 'train') AS last_train_ts,
       min(ts) FILTER (WHERE split IN ('valid', 'test')) AS first_eval_ts
FROM interaction_splits
GROUP BY user_id
HAVING min(ts) FILTER (WHERE split IN ('valid', 'test')) < max(ts) FILTER (WHERE split = 'train')
ORDER BY user_id
