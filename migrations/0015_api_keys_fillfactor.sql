-- Verification writes `last_used_at`/`last_used_ip` back to every used key (batched, every couple of
-- seconds). Neither is indexed, so with free room on the row's page Postgres updates it in place
-- (a HOT update) instead of writing a new row version elsewhere plus an entry in each of the
-- table's indexes. Leave a fifth of each page free for that; existing pages get it as they are
-- rewritten.
ALTER TABLE api_keys SET (fillfactor = 80);
