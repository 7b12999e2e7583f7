-- Least privilege for API keys: what scopes an owner (user or client) may put on its keys.
-- NULL = any scope that is not reserved; an array = only those; '{}' = none. Checked when a key is
-- created and again at every verification, so narrowing it narrows existing keys.
ALTER TABLE users ADD COLUMN key_scopes text[];
ALTER TABLE clients ADD COLUMN key_scopes text[];

-- `api_key_changed`: a change that narrows what an API key may do without revoking it ("drop what
-- you cached about this key and ask again").
ALTER TABLE revocation_events DROP CONSTRAINT revocation_events_kind_check;
ALTER TABLE revocation_events ADD CONSTRAINT revocation_events_kind_check
    CHECK (kind IN ('access_token', 'refresh_family', 'api_key', 'api_key_changed', 'signing_key', 'client', 'user'));

-- Where a client may send a browser back to (OAuth redirect and OIDC post-logout redirect), stored
-- as validated absolute URIs: https, or http to a loopback host; never a fragment.
ALTER TABLE clients ADD COLUMN redirect_uris text[] NOT NULL DEFAULT '{}';
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris text[] NOT NULL DEFAULT '{}';
