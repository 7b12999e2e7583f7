-- Retry-safe rotation: what a spending request asked for, so a retry of it can be recognised
-- (the same scope), and how many retries it answered.
ALTER TABLE refresh_tokens
    ADD COLUMN spent_scopes text[],
    ADD COLUMN retries integer NOT NULL DEFAULT 0;
-- A token's successor is the next generation of its family.
CREATE INDEX refresh_tokens_family_generation ON refresh_tokens (family_id, generation);
