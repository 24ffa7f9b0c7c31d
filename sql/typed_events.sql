-- grain: one row per raw_events row of the files being cleaned (event_batch; temp relation).
-- Trims and types every contract column and names the first rule the row breaks in `reason`
-- (NULL = clean). Rules, in order:
--   parse errors from ingest, missing / oversized / control-character ids, missing or unknown
--   event type, missing / unparseable / implausible timestamp, non-numeric or out-of-range value.
-- Only what cleaning needs is kept (typed columns, position, reason); quarantined_events_batch.sql
-- fetches the raw text of the few failing rows back from raw_events.
-- Timestamps: ISO-8601 (an offset is honoured, none means UTC) or epoch seconds / milliseconds
-- (a number >= 1e11 is read as milliseconds: 1e11 s would be the year 5138).
CREATE OR REPLACE TEMP TABLE typed_events AS
WITH trimmed AS (
    SELECT file_id, line, parse_error,
           nullif(trim(event_id), '') AS event_id,
           nullif(trim(user_id), '') AS user_id,
           nullif(trim(item_id), '') AS item_id,
           nullif(lower(trim(event_type)), '') AS event_type,
           nullif(trim("timestamp"), '') AS ts_text,
           nullif(trim(value), '') AS value_text,
           -- position of the row in ingest order: file first, then line
           file_id::BIGINT * 10000000000 + line AS pos
    FROM raw_events
    WHERE file_id IN (SELECT file_id FROM event_batch)
),
parsed AS (
    SELECT *,
           CASE WHEN regexp_full_match(ts_text, '[0-9]{1,14}(\.[0-9]+)?')
                THEN to_timestamp(CASE WHEN ts_text::DOUBLE >= 1e11 THEN ts_text::DOUBLE / 1000
                                       ELSE ts_text::DOUBLE END)
                ELSE try_cast(ts_text AS TIMESTAMPTZ) END AS ts_tz,
           try_cast(value_text AS DOUBLE) AS value_num
    FROM trimmed
),
typed AS (
    SELECT *, timezone('UTC', ts_tz) AS ts FROM parsed  -- naive UTC TIMESTAMP
)
SELECT pos, event_id, user_id, item_id, event_type, ts, value_num AS value,
       CASE
           WHEN parse_error IS NOT NULL THEN parse_error
           WHEN user_id IS NULL THEN 'missing_user_id'
           WHEN item_id IS NULL THEN 'missing_item_id'
           WHEN length(user_id) > $max_id_length OR length(item_id) > $max_id_length
                OR length(coalesce(event_id, '')) > $max_id_length THEN 'oversized_id'
           WHEN regexp_matches(user_id || chr(31) || item_id || chr(31) || coalesce(event_id, ''),
                               '[\x00-\x1e\x7f]') THEN 'control_character_in_id'
           WHEN event_type IS NULL THEN 'missing_event_type'
           WHEN NOT list_contains($event_types, event_type) THEN 'unknown_event_type'
           WHEN ts_text IS NULL THEN 'missing_timestamp'
           WHEN ts IS NULL THEN 'unparseable_timestamp'
           WHEN ts < $min_timestamp OR ts > $max_timestamp THEN 'implausible_timestamp'
           WHEN value_text IS NOT NULL AND (value_num IS NULL OR isnan(value_num) OR isinf(value_num))
                THEN 'non_numeric_value'
           WHEN list_contains($rating_types, event_type) AND value_num IS NULL THEN 'missing_rating'
           WHEN list_contains($rating_types, event_type)
                AND (value_num < $rating_min OR value_num > $rating_max) THEN 'rating_out_of_range'
           WHEN value_num < 0 THEN 'negative_value'
       END AS reason
FROM typed
