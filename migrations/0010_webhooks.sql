-- Webhooks: endpoints, the delivery outbox (written in the transaction of the change that causes
-- the event), the log of attempts, and the expiry notices armed whenever a key's expiry is set.

CREATE TABLE webhook_endpoints (
    id            uuid PRIMARY KEY,
    -- The creator's token subject; a non-admin endpoint receives the events of this owner's keys.
    owner         text NOT NULL,
    -- Created with scope admin: receives every event.
    admin         boolean NOT NULL,
    url           text NOT NULL,
    events        text[] NOT NULL,
    description   text,
    -- AES-256-GCM under a key derived from the master key, bound to the endpoint id.
    secret_sealed bytea NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    -- Why it was disabled by the service (410 Gone), when it was.
    disabled_reason text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX webhook_endpoints_owner ON webhook_endpoints (owner);

-- One row per event and endpoint. Its id is the webhook-id of every attempt; its body never changes.
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type      text NOT NULL,
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL,
    last_response_code integer
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);

-- The delivery log: one row per attempt (a short response excerpt at most, never the whole body).
CREATE TABLE webhook_attempts (
    id            uuid PRIMARY KEY,
    delivery_id   uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    endpoint_id   uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_type    text NOT NULL,
    attempt       integer NOT NULL,
    status        text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    response_code integer,
    excerpt       text,
    error         text,
    at            timestamptz NOT NULL
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, at DESC, id DESC);

-- api_key.expiring (7 d, 1 d before) and api_key.expired notices, armed (and re-armed) in the
-- transaction that sets a key's expiry; sent once each by whichever instance claims them.
CREATE TABLE api_key_notices (
    key_id   uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    kind     text NOT NULL CHECK (kind IN ('expiring_7d', 'expiring_1d', 'expired')),
    due_at   timestamptz NOT NULL,
    -- The expiry this notice belongs to.
    expires_at timestamptz NOT NULL,
    sent_at  timestamptz,
    PRIMARY KEY (key_id, kind)
);
CREATE INDEX api_key_notices_due ON api_key_notices (due_at) WHERE sent_at IS NULL;
