-- ID-token keys get the access-token keys' lifecycle (next → active → retired) and rotate with
-- them: a next key is published before it signs, and a retired one stays published while the ID
-- tokens it signed live.
--
-- A new table rather than new columns on `id_token_keys`: instances of the previous version,
-- still serving during a rolling upgrade, read the newest row of `id_token_keys` as their signing
-- key, and would take a next key added there for it. The key made so far becomes the active one
-- here, so both versions sign with the same key meanwhile. `id_token_keys` is no longer written
-- (a later release drops it); re-sealing under a new master key still covers it.
CREATE TABLE id_token_signing_keys (
    kid             text PRIMARY KEY,
    state           text NOT NULL CHECK (state IN ('next', 'active', 'retired')),
    private_key_enc bytea NOT NULL,
    public_jwk      jsonb NOT NULL,
    created_at      timestamptz NOT NULL,
    activated_at    timestamptz,
    retired_at      timestamptz,
    publish_until   timestamptz,
    CHECK (state <> 'retired' OR publish_until IS NOT NULL)
);
-- At most one next and one active key.
CREATE UNIQUE INDEX id_token_signing_keys_one_per_state ON id_token_signing_keys (state)
    WHERE state IN ('next', 'active');

INSERT INTO id_token_signing_keys (kid, state, private_key_enc, public_jwk, created_at, activated_at)
SELECT kid, 'active', private_key_enc, public_jwk, created_at, created_at
  FROM id_token_keys
 ORDER BY created_at DESC
 LIMIT 1;
