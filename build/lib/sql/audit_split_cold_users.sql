-- audit: offending users, i.e. users with valid/test pairs but no train history.
SELECT user_id, count(*) AS eval_pairs
FROM interaction_splits
GROUP BY user_id
HAVING count(*) FILTER (WHERE split IN ('valid', 'test')) > 0
   AND count(*) FILTER (WHERE split = 'train') = 0
ORDER BY user_id
