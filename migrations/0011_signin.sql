-- Authorization code with PKCE and OpenID Connect sign-in.

-- The RS256 key that signs ID tokens (OIDC Core §15.1 requires RS256 support), whatever algorithm
-- signs access tokens. Sealed under the master key like the access-token keys.
CREATE TABLE id_token_keys (
    kid             text PRIMARY KEY,
    private_key_enc bytea NOT NULL,
    public_jwk      jsonb NOT NULL,
    created_at      timestamptz NOT NULL
);

-- Browser sign-in sessions: the cookie holds a random secret, stored only as a keyed hash.
CREATE TABLE signin_sessions (
    id                  uuid PRIMARY KEY,
    token_hash          bytea NOT NULL UNIQUE,
    user_id             uuid NOT NULL,
    auth_time           timestamptz NOT NULL,
    last_seen_at        timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL,
    ended_at            timestamptz
);
CREATE INDEX signin_sessions_expiry ON signin_sessions (absolute_expires_at);

-- Authorization codes (RFC 6749 §4.1, RFC 7636): single use, 60 s, bound to the client, the
-- redirect URI and the PKCE challenge. `family_id` is the refresh family the first use started, so a
-- second use can revoke what the first issued.
CREATE TABLE authorization_codes (
    code_hash      bytea PRIMARY KEY,
    client_id      text NOT NULL,
    user_id        uuid NOT NULL,
    session_id     uuid NOT NULL,
    redirect_uri   text NOT NULL,
    code_challenge text NOT NULL,
    scopes         text[] NOT NULL,
    nonce          text,
    auth_time      timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    family_id      uuid
);
CREATE INDEX authorization_codes_expiry ON authorization_codes (expires_at);
