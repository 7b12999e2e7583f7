-- Editing API keys: a key can be disabled (and enabled again) without being revoked.
ALTER TABLE api_keys ADD COLUMN enabled boolean NOT NULL DEFAULT true;

-- A key and its rotation successors form one limit group: they share one rate limit and one credit
-- balance. The group's id is the id of its first key; NULL (keys made before this migration) means
-- the key's own id, so no existing row needs rewriting.
ALTER TABLE api_keys ADD COLUMN limit_group uuid;
CREATE INDEX api_keys_limit_group ON api_keys (limit_group) WHERE limit_group IS NOT NULL;

-- What a limit group may use. Postgres holds the credit balance (never below zero, changed only by
-- conditional UPDATEs); Redis holds nothing but the rate-limit windows, which may be lost.
CREATE TABLE api_key_limits (
    group_id         uuid PRIMARY KEY,
    -- At most rate_limit verifications in any rate_window seconds, across every instance.
    rate_limit       integer CHECK (rate_limit BETWEEN 1 AND 1000000),
    rate_window      integer CHECK (rate_window BETWEEN 1 AND 86400),
    -- The remaining balance; NULL = no credit check.
    credits          bigint CHECK (credits >= 0),
    -- Every refill_interval seconds from refill_from the balance is set back to refill_amount;
    -- refilled_periods is how many intervals have been applied so far.
    refill_amount    bigint CHECK (refill_amount >= 1),
    refill_interval  bigint CHECK (refill_interval >= 1),
    refill_from      timestamptz,
    refilled_periods bigint NOT NULL DEFAULT 0,
    CHECK ((rate_limit IS NULL) = (rate_window IS NULL)),
    CHECK ((refill_amount IS NULL) = (refill_interval IS NULL) AND (refill_interval IS NULL) = (refill_from IS NULL)),
    CHECK (refill_amount IS NULL OR credits IS NOT NULL)
);
