-- ID-token keys can be revoked like the access-token keys: out of the JWKS at once, their
-- `id_token_hint`s no longer read. The state set gains 'revoked', with its time.
ALTER TABLE id_token_signing_keys DROP CONSTRAINT id_token_signing_keys_state_check;
ALTER TABLE id_token_signing_keys
    ADD CONSTRAINT id_token_signing_keys_state_check CHECK (state IN ('next', 'active', 'retired', 'revoked')),
    ADD COLUMN revoked_at timestamptz;
