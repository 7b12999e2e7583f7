-- A key is rotated at most once: besides the conditional UPDATE on the old key, the database itself
-- refuses a second successor.
CREATE UNIQUE INDEX api_keys_rotated_from ON api_keys (rotated_from) WHERE rotated_from IS NOT NULL;
