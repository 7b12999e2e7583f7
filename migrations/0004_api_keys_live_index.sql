-- Key creation counts an owner's live keys under the owner's lock. This partial index holds only
-- keys that are neither revoked nor rotated, so the count (bounded by the limit, see
-- apikeys::store::lock_and_count_live) walks live keys alone instead of every key the owner ever had.
CREATE INDEX api_keys_owner_live ON api_keys (owner, expires_at) WHERE revoked_at IS NULL AND rotated_to IS NULL;
