-- Every start looks for hashes stored before key ids existed (to label them with the current key):
-- with these, that look-up reads an index that is empty once they are labelled, not the whole table.
CREATE INDEX api_keys_unlabelled ON api_keys (id) WHERE hmac_key_id IS NULL;
CREATE INDEX refresh_tokens_unlabelled ON refresh_tokens (token_hash) WHERE hmac_key_id IS NULL;
