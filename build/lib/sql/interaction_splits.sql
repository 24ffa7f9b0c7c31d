-- grain: one row per (user_id, item_id) pair with at least one positive event; ts is the
-- first positive event of the pair, so a repeat interaction never leaks an item from train
-- into valid/test.
-- leave_last_out: per user, ordered by ts (ties by item_id), the last pair -> test, the one
--   before -> valid, the rest -> train; users with fewer than $min_user_positives pairs -> train.
-- global_time: ts >= test_start -> test, >= valid_start -> valid, else train (the cut points
--   default to the 0.8 / 0.9 quantiles of ts); valid/test pairs of users with no train pair
--   become 'cold_start' so evaluation never scores a user the model has never seen.
CREATE OR REPLACE TABLE interaction_splits AS
WITH pairs AS (
    SELECT user_id, item_id, min(ts) AS ts, max(ts) AS last_ts, count(*)::BIGINT AS n_events,
           max(value) AS max_value
    FROM clean_interactions
    WHERE is_positive
    GROUP BY user_id, item_id
),
cuts AS (
    SELECT coalesce($valid_start::TIMESTAMP, quantile_disc(ts, 0.8)) AS valid_start,
           coalesce($test_start::TIMESTAMP, quantile_disc(ts, 0.9)) AS test_start
    FROM pairs
),
ranked AS (
    SELECT p.*,
           row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, item_id DESC) AS rank_from_end,
           count(*) OVER (PARTITION BY user_id) AS user_pairs
    FROM pairs p
),
assigned AS (
    SELECT r.*,
           CASE WHEN $strategy = 'leave_last_out' THEN
                    CASE WHEN user_pairs < $min_user_positives THEN 'train'
                         WHEN rank_from_end = 1 THEN 'test'
                         WHEN rank_from_end = 2 THEN 'valid'
                         ELSE 'train' END
                ELSE CASE WHEN ts >= c.test_start THEN 'test'
                          WHEN ts >= c.valid_start THEN 'valid'
                          ELSE 'train' END
           END AS split0
    FROM ranked r, cuts c
)
SELECT user_id, item_id, ts, last_ts, n_events, max_value,
       CASE WHEN split0 <> 'train' AND NOT bool_or(split0 = 'train') OVER (PARTITION BY user_id)
            THEN 'cold_start' ELSE split0 END AS split
FROM assigned
ORDER BY user_id, ts, item_id
