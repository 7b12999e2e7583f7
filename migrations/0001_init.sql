-- Tessera schema. Times are timestamptz (UTC); secrets are stored only as hashes or ciphertext.

-- Signing keys: private part sealed with AES-256-GCM under a key derived from the master key, kid as AAD.
CREATE TABLE signing_keys (
    kid             text PRIMARY KEY,
    alg             text NOT NULL CHECK (alg IN ('ES256', 'EdDSA', 'RS256')),
    state           text NOT NULL CHECK (state IN ('next', 'active', 'retired', 'revoked')),
    private_key_enc bytea NOT NULL,
    public_jwk      jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    activated_at    timestamptz,
    retired_at      timestamptz,
    revoked_at      timestamptz,
    -- A retired key stays in the JWKS until every token it signed has expired.
    publish_until   timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (state) WHERE state = 'active';
CREATE UNIQUE INDEX signing_keys_one_next ON signing_keys (state) WHERE state = 'next';

CREATE TABLE clients (
    client_id         text PRIMARY KEY,
    name              text NOT NULL,
    secret_hash       text,                 -- Argon2id PHC string; NULL for public clients
    public            boolean NOT NULL,
    grant_types       text[] NOT NULL,
    scopes            text[] NOT NULL,
    audience          text[] NOT NULL DEFAULT '{}',
    access_token_ttl  integer,
    refresh_token_ttl integer,
    created_at        timestamptz NOT NULL,
    disabled_at       timestamptz
);

CREATE TABLE users (
    id                uuid PRIMARY KEY,
    username          text NOT NULL,
    password_hash     text NOT NULL,        -- Argon2id PHC string
    scopes            text[] NOT NULL,
    created_at        timestamptz NOT NULL,
    deleted_at        timestamptz,
    failed_logins     integer NOT NULL DEFAULT 0,
    first_failure_at  timestamptz,
    locked_until      timestamptz
);
CREATE UNIQUE INDEX users_username_live ON users (lower(username)) WHERE deleted_at IS NULL;

-- One family per login; every refresh token descends from exactly one family.
CREATE TABLE refresh_families (
    id                  uuid PRIMARY KEY,
    client_id           text NOT NULL,
    user_id             uuid NOT NULL,
    created_at          timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    revoked_at          timestamptz,
    revoked_reason      text
);
CREATE INDEX refresh_families_user ON refresh_families (user_id) WHERE revoked_at IS NULL;
CREATE INDEX refresh_families_client ON refresh_families (client_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    token_hash  bytea PRIMARY KEY,          -- HMAC-SHA-256 of the token
    family_id   uuid NOT NULL REFERENCES refresh_families (id) ON DELETE CASCADE,
    generation  integer NOT NULL,
    scopes      text[] NOT NULL,
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,       -- idle expiry
    spent_at    timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expiry ON refresh_tokens (expires_at);

-- Revoked access tokens, kept until they would have expired anyway.
CREATE TABLE revoked_jtis (
    jti        uuid PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL
);
CREATE INDEX revoked_jtis_expiry ON revoked_jtis (expires_at);

CREATE TABLE api_keys (
    id             uuid PRIMARY KEY,
    owner          text NOT NULL,
    name           text NOT NULL,
    key_hash       bytea NOT NULL UNIQUE,   -- HMAC-SHA-256 under the server secret of hash_version
    hash_version   smallint NOT NULL,
    start          text NOT NULL,
    environment    text NOT NULL CHECK (environment IN ('live', 'test')),
    scopes         text[] NOT NULL,
    allowed_cidrs  text[] NOT NULL DEFAULT '{}',
    metadata       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz,
    revoked_at     timestamptz,
    revoked_reason text,
    rotated_from   uuid REFERENCES api_keys (id),
    rotated_to     uuid,
    last_used_at   timestamptz,
    last_used_ip   text
);
CREATE INDEX api_keys_owner ON api_keys (owner, created_at);

-- Usage per key per minute (and rolled up per hour); additive upserts from every instance.
CREATE TABLE key_usage (
    key_id      uuid NOT NULL,
    bucket      text NOT NULL CHECK (bucket IN ('minute', 'hour')),
    start       timestamptz NOT NULL,
    valid       bigint NOT NULL DEFAULT 0,
    denied      jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (key_id, bucket, start)
);
CREATE TABLE key_usage_ips (
    key_id     uuid NOT NULL,
    ip         text NOT NULL,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    PRIMARY KEY (key_id, ip)
);

CREATE TABLE anomalies (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL,
    key_id      uuid,
    client_id   text,
    subject     text NOT NULL,              -- dedup key: key id, client id or source address
    window_start timestamptz NOT NULL,
    detected_at timestamptz NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX anomalies_dedup ON anomalies (kind, subject, window_start);
CREATE INDEX anomalies_detected ON anomalies (detected_at);

CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    target_type text NOT NULL,
    target_id   text NOT NULL,
    ip          text,
    request_id  text,
    details     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_target ON audit_log (target_type, target_id, at);
CREATE INDEX audit_log_actor ON audit_log (actor, at);

-- Transactional outbox of revocations. Rows are inserted with the change they describe; `seq`
-- is assigned later, in commit order, by the one relay holding the advisory lock, so a reader
-- paging by seq never skips an event that committed late.
CREATE TABLE revocation_events (
    id           bigserial PRIMARY KEY,
    seq          bigint UNIQUE,
    kind         text NOT NULL CHECK (kind IN ('access_token', 'refresh_family', 'api_key', 'signing_key', 'client', 'user')),
    subject_id   text NOT NULL,
    jti          text,
    kid          text,
    expires_at   timestamptz,
    revoked_at   timestamptz NOT NULL,
    reason       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX revocation_events_unsequenced ON revocation_events (id) WHERE seq IS NULL;
CREATE INDEX revocation_events_unpublished ON revocation_events (seq) WHERE published_at IS NULL AND seq IS NOT NULL;

CREATE FUNCTION revocation_events_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('tessera_outbox', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER revocation_events_notify AFTER INSERT ON revocation_events
    FOR EACH STATEMENT EXECUTE FUNCTION revocation_events_notify();
