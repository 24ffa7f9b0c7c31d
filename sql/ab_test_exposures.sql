-- grain: one row per (user, arm, position) of the logged impressions of the two versions under
-- test, with the feedback they received. Impressions and feedback are landing events whose extra
-- columns (request_id, arm, model_version, position) stay in raw_events (joined on source_file,
-- line); feedback meets its impression on (request_id, item_id). A version matches by its registry
-- number or its checkpoint name, as the service may log either. Every line names its experiment
-- (the challenger version under test, on both arms' lines): an earlier experiment's champion
-- traffic, bucketed by another salt, is left out by that name, whatever its timestamps.
WITH logged AS (
    SELECT c.user_id,
           c.item_id,
           c.event_type,
           c.ts,
           json_extract_string(r.extra, '$.request_id') AS request_id,
           json_extract_string(r.extra, '$.arm') AS arm,
           json_extract_string(r.extra, '$.model_version') AS model_version,
           TRY_CAST(json_extract_string(r.extra, '$.position') AS INTEGER) AS position,
           json_extract_string(r.extra, '$.experiment') AS experiment
    FROM clean_interactions c
    JOIN raw_events r ON r.source_file = c.source_file AND r.line = c.line
    WHERE json_extract_string(r.extra, '$.request_id') IS NOT NULL
      AND list_contains($challenger_versions, json_extract_string(r.extra, '$.experiment'))
),
impressions AS (
    SELECT user_id, item_id, request_id, arm, position
    FROM logged
    WHERE event_type = 'impression'
      AND position BETWEEN 1 AND $positions
      AND ((arm = 'champion' AND list_contains($champion_versions, model_version))
        OR (arm = 'challenger' AND list_contains($challenger_versions, model_version)))
),
feedback AS (
    SELECT request_id,
           item_id,
           bool_or(event_type IN ('click', 'like')) AS clicked,  -- a like is a click that went further
           bool_or(event_type = 'like') AS liked
    FROM logged
    WHERE event_type <> 'impression'
    GROUP BY request_id, item_id
)
SELECT i.user_id,
       i.arm,
       i.position,
       count(*)::BIGINT AS impressions,
       count(*) FILTER (WHERE f.clicked)::BIGINT AS clicks,
       count(*) FILTER (WHERE f.liked)::BIGINT AS likes
FROM impressions i
LEFT JOIN feedback f ON f.request_id = i.request_id AND f.item_id = i.item_id
GROUP BY i.user_id, i.arm, i.position
ORDER BY i.user_id, i.arm, i.position
