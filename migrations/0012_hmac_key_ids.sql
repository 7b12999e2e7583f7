-- Which HMAC key made each stored hash (the first 8 bytes of HMAC(key, "tessera/key-id")), so that
-- during a change of TESSERA_HMAC_SECRET (or of the master key it is derived from) a report can
-- count what still depends on the previous key. NULL: stored before key ids existed; the service
-- labels those with its current key when it starts with no previous key configured (they can only
-- have been made with it).
ALTER TABLE api_keys ADD COLUMN hmac_key_id bytea;
ALTER TABLE refresh_tokens ADD COLUMN hmac_key_id bytea;
