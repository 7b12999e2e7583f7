-- Refused verifications of unknown or malformed keys, per source address and minute, added up from
-- every instance: the evidence for BRUTE_FORCE, which has no key to hang on.
CREATE TABLE source_failures (
    source   text NOT NULL,
    minute   timestamptz NOT NULL,
    count    bigint NOT NULL DEFAULT 0,
    codes    jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (source, minute)
);
CREATE INDEX source_failures_minute ON source_failures (minute);
CREATE INDEX key_usage_start ON key_usage (bucket, start);
CREATE INDEX key_usage_ips_first_seen ON key_usage_ips (first_seen);

-- {"A": 1, "B": 2} + {"A": 3} = {"A": 4, "B": 2}: additive merge of per-code counters.
CREATE FUNCTION jsonb_add_counts(a jsonb, b jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(jsonb_object_agg(k, total), '{}'::jsonb) FROM (
        SELECT k, sum(v::bigint) AS total
        FROM (SELECT * FROM jsonb_each_text(coalesce(a, '{}')) UNION ALL SELECT * FROM jsonb_each_text(coalesce(b, '{}'))) AS s(k, v)
        GROUP BY k) AS t
$$;
