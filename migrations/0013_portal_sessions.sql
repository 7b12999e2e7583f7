-- The developer portal's backend-for-frontend sessions. The browser holds a random cookie; only
-- its keyed hash is stored. A session is bound to the refresh family its sign-in started, so
-- revoking the family (sign-out, user deletion, reuse detection) ends the portal session too.
CREATE TABLE portal_sessions (
    id_hash    bytea PRIMARY KEY,
    user_id    uuid NOT NULL,
    family_id  uuid NOT NULL,
    scopes     text[] NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at);
